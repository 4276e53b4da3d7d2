"""`erkguid guidance`: CFG and autoguidance alone vs + ERK-Guid vs + ERK-Proj on an exact
class-conditional mixture (App. B.4, Eq. 54-61).

Every method starts from the same per-sample-seeded noise and class label. Accuracy is measured
against the exact guided ODE (a per-sample adaptive reference solve of the same guided
denoiser); the distribution target is the exact class-conditional p(x | c), the distribution
guidance aims to sharpen towards: sliced W2 per class (averaged over classes) and NLL
-log p(x | c). NFE: combined-denoiser calls of the loop and network evaluations per sample.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._io import atomic_savefig
from ..evaluation import Row, Setting, evaluate, write_results
from ..guidance import Guided, autoguidance, cfg
from ..metrics import ratio_ci, sliced_wasserstein
from ..models import ConditionalMixture, GaussianMixture, get_model
from ..noise import randn_from_seeds
from ..reference import check_reference
from ..sampling import sample, sample_erk_proj
from ..schedules import edm_sigmas
from ._output import pyplot

VARIANTS = ("alone", "+ERK-Guid", "+ERK-Proj", "+ERK-Guid+Proj")


def class_sliced_w2(model: GaussianMixture, x: torch.Tensor, labels: torch.Tensor, truth: dict[int, torch.Tensor]) -> float:
    """Sliced W2 to exact class-conditional samples, computed per class and averaged over classes."""
    vals = [sliced_wasserstein(x[labels == c], truth[c]) for c in truth if (labels == c).any()]
    return float(sum(vals) / len(vals))


def build_guidance(model: GaussianMixture, kind: str, w: float, broaden: float) -> Guided:
    """The exact CFG (conditional vs unconditional) or AG (vs a broadened copy) guided denoiser."""
    net = ConditionalMixture(model)
    if kind == "CFG":
        return cfg(net, w, {"class_labels": torch.tensor([ConditionalMixture.NULL])}, batched=True)
    if kind == "AG":
        return autoguidance(net, ConditionalMixture(model.broadened(broaden, name=f"{model.name}-weak")), w)
    raise ValueError(f"guidance kind must be 'CFG' or 'AG', got {kind!r}")


def run_guidance(
    out_dir: str | Path | None = "runs/guidance",
    *,
    model_name: str = "tree2d",
    num_samples: int = 1024,
    steps: tuple[int, ...] = (8, 16),
    w_cfg: float = 2.0,
    w_ag: float = 2.0,
    broaden: float = 2.0,
    w_stiff: float = 0.5,
    w_con: float = 0.5,
    w_proj: float | None = None,
    sigma_max: float = 80.0,
    ref_rtol: float = 1e-6,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the grid; return ``{'rows': [...], ...}`` and write guidance.json/.md/.png to ``out_dir``."""
    model = get_model(model_name)
    if not isinstance(model, GaussianMixture) or model.labels is None:
        raise ValueError(f"guidance needs a class-conditional mixture (tree2d, digits64), got {model_name!r}")
    ncls = model.num_classes
    labels = torch.arange(seed, seed + num_samples) % ncls
    x0 = randn_from_seeds(range(seed, seed + num_samples), model.shape, sigma=sigma_max, dtype=torch.float64)
    truth = {c: model.sample(max(64, num_samples // ncls), seed=10_000 + seed + c, class_labels=torch.full((1,), c).expand(
        max(64, num_samples // ncls)), dtype=torch.float64) for c in range(ncls)}
    rows: list[dict[str, Any]] = []
    finals: dict[tuple[str, str, int], torch.Tensor] = {}
    refs: dict[str, dict[str, Any]] = {}
    kinds = (("CFG", w_cfg), ("AG", w_ag))
    w_p = w_stiff if w_proj is None else w_proj
    bar = tqdm(total=len(kinds) * (1 + len(steps) * len(VARIANTS)), disable=not progress, desc="guidance")
    for kind, w in kinds:
        guided = build_guidance(model, kind, w, broaden)
        t = time.perf_counter()
        ref, gap = check_reference(guided, x0, sigma_max, rtol=ref_rtol, class_labels=labels)
        refs[kind] = {"w": w, "max_gap_vs_100x_looser": gap, "seconds": time.perf_counter() - t,
                      "sliced_w2": class_sliced_w2(model, ref.x, labels, truth),
                      "nll": float(-model.log_prob(ref.x, class_labels=labels).mean())}
        finals[(kind, "reference", 0)] = ref.x
        bar.update()
        for n in steps:
            sigmas = edm_sigmas(n, sigma_max=sigma_max)
            base = None
            for variant in VARIANTS:
                guided.counter.reset()
                proj = variant.endswith("Proj")
                setting = Setting(w_stiff if "Guid" in variant else 0.0, w_con if variant != "alone" else 0.0)
                kw: dict[str, Any] = {"w_proj": w_p} if proj else {}
                run = evaluate(guided, x0, sigmas, ref.x, setting=setting, run=sample_erk_proj if proj else sample,
                               class_labels=labels, **kw)
                base = run.err if base is None else base
                label = f"{setting.label},proj={w_p:g}" if setting.w_stiff else f"proj={w_p:g}"
                rows.append(Row(model.name, "heun", n, run.nfe, setting,
                                {"err_mean": float(run.err.mean()), "sliced_w2": class_sliced_w2(model, run.x, labels, truth),
                                 "nll": float(-model.log_prob(run.x, class_labels=labels).mean())},
                                {"err_ratio": ratio_ci(run.err, base)}, None, run.seconds,
                                {"guidance": kind, "variant": variant, "nfe_network": guided.counter.per_sample(num_samples),
                                 **({"setting": label} if proj else {})}).flat())
                finals[(kind, variant, n)] = run.x
                bar.update()
    bar.close()
    truth_all = torch.cat([truth[c] for c in range(ncls)])
    truth_labels = torch.cat([torch.full((truth[c].shape[0],), c) for c in range(ncls)])
    truth2 = {c: model.sample(truth[c].shape[0], seed=20_000 + seed + c, class_labels=torch.full((truth[c].shape[0],), c),
                              dtype=torch.float64) for c in range(ncls)}
    result = {
        "model": model.name,
        "num_samples": num_samples,
        "seed": seed,
        "settings": {"w_cfg": w_cfg, "w_ag": w_ag, "ag_broaden": broaden, "w_stiff": w_stiff, "w_con": w_con,
                     "w_proj": w_p, "solver": "heun", "sigma_max": sigma_max,
                     "reference_rtol": ref_rtol / 100},
        "target": "exact class-conditional p(x | c) (sliced W2 per class, averaged; NLL = -log p(x | c))",
        "reference": refs,
        "truth_vs_truth_sliced_w2": class_sliced_w2(model, truth_all, truth_labels, truth2),
        "truth_nll": float(-model.log_prob(truth_all, class_labels=truth_labels).mean()),
        "rows": rows,
    }
    if out_dir is not None:
        plot = (lambda p: plot_guidance(p, model, finals, rows, steps)) if model.dim == 2 else None
        result["files"] = write_results(out_dir, "guidance", result, format_table(result), plot)
    return result


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of the rows plus the reference and truth floors."""
    head = ("| guidance | variant | steps | NFE loop | NFE network | err vs guided ODE | err / alone [95% CI] | "
            "sliced W2 to p(x|c) | NLL |")
    lines = [head, "|" + "---|" * 9]
    for r in result["rows"]:
        ci = "—" if r["variant"] == "alone" else f"{r['err_ratio']:.3f} [{r['err_ratio_lo']:.3f}, {r['err_ratio_hi']:.3f}]"
        lines.append(f"| {r['guidance']} | {r['variant']} | {r['steps']} | {r['nfe']:g} | {r['nfe_network']:g} | "
                     f"{r['err_mean']:.4f} | {ci} | {r['sliced_w2']:.4f} | {r['nll']:.2f} |")
    for kind, ref in result["reference"].items():
        lines.append(f"| {kind} | exact guided ODE | — | — | — | 0 | — | {ref['sliced_w2']:.4f} | {ref['nll']:.2f} |")
    lines.append(f"| — | exact p(x\\|c) samples | — | — | — | — | — | {result['truth_vs_truth_sliced_w2']:.4f} | "
                 f"{result['truth_nll']:.2f} |")
    return "\n".join(lines) + "\n"


def plot_guidance(
    path: Path, model: GaussianMixture, finals: dict[tuple[str, str, int], torch.Tensor], rows: list[dict[str, Any]],
    steps: tuple[int, ...]
) -> None:
    """Samples at the fewest steps (per guidance kind and variant, next to the exact guided ODE) and error vs NFE."""
    plt = pyplot()

    n = steps[0]
    g = torch.linspace(-1.3, 1.3, 160, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    lp = model.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(160, 160)
    lp = lp.clamp_min(lp.max() - 10)
    cols = 1 + len(VARIANTS) + 1
    fig = plt.figure(figsize=(3.0 * cols, 6.2))
    for r, kind in enumerate(("CFG", "AG")):
        panels = [("exact guided ODE", finals[(kind, "reference", 0)])] + [
            (f"{v} ({n} steps)", finals[(kind, v, n)]) for v in VARIANTS
        ]
        for c, (title, pts) in enumerate(panels):
            ax = fig.add_subplot(2, cols, r * cols + c + 1)
            ax.imshow(lp, origin="lower", extent=[-1.3, 1.3, -1.3, 1.3], cmap="Greys", alpha=0.6)
            ax.scatter(pts[:, 0], pts[:, 1], s=0.4, c="tab:blue" if c == 0 else "tab:red")
            ax.set_xlim(-1.3, 1.3)
            ax.set_ylim(-1.3, 1.3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{kind}: {title}", fontsize=8)
        ax = fig.add_subplot(2, cols, r * cols + cols)
        for v in VARIANTS:
            curve = [(x["nfe_network"], x["err_mean"]) for x in rows if x["guidance"] == kind and x["variant"] == v]
            ax.plot(*zip(*curve), "o-", label=v)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations per sample")
        ax.set_ylabel("mean error vs exact guided ODE")
        ax.set_title(kind, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
