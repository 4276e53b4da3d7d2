"""`erkguid demo`: Heun vs ERK-Guid on an exact-score model (the 2-D tree by default, or an image model such as
the photograph-patch mixture ``patches16``), against the exact ODE solution.

Every method starts from the same per-sample-seeded noise (common random numbers); the
reference is a per-sample adaptive Dormand-Prince solve checked against a 100x tighter one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._io import atomic_savefig
from ..evaluation import Setting, distribution_metrics, evaluate, measured_row, write_results
from ..metrics import sliced_wasserstein
from ..models import GaussianMixture, LowRankMixture, tree_2d
from ..noise import randn_from_seeds
from ..reference import check_reference
from ..sampling import Trace
from ..schedules import edm_sigmas
from ._output import pyplot

DEFAULT_STEPS = (4, 6, 8, 16)  # Heun NFE = 2N - 1: 7, 11, 15, 31
DEFAULT_SETTINGS = ((0.0, 0.0), (0.25, 0.5), (0.5, 0.5), (1.0, 0.5), (0.5, 0.0))


def _verdict(row: dict[str, Any], base: dict[str, Any] | None) -> str:
    if base is None or row is base:
        return "baseline"
    err = "error down" if row["err_ratio_hi"] < 1 else "error UP" if row["err_ratio_lo"] > 1 else "error ~"
    dist = "SW down" if row["sliced_w2"] < base["sliced_w2"] else "SW UP"
    return f"{err}, {dist}"


def run_demo(
    out_dir: str | Path | None = "runs/demo",
    *,
    model: GaussianMixture | LowRankMixture | None = None,
    num_samples: int = 2048,
    steps: tuple[int, ...] = DEFAULT_STEPS,
    settings: tuple[tuple[float, float], ...] = DEFAULT_SETTINGS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo grid, print nothing, return ``{'rows': [...], ...}``; write JSON + PNG to ``out_dir``."""
    model = model or tree_2d()
    sigma_max = 80.0
    x0 = randn_from_seeds(range(seed, seed + num_samples), model.shape, sigma=sigma_max, dtype=torch.float64)
    t0 = time.perf_counter()
    ref, ref_gap = check_reference(model, x0, sigma_max, rtol=1e-7, progress=progress)
    ref_seconds = time.perf_counter() - t0
    truth = model.sample(num_samples, seed=10_000 + seed, dtype=torch.float64)
    rows: list[dict[str, Any]] = []
    finals: dict[tuple[int, float, float], torch.Tensor] = {}
    traces: dict[tuple[int, float, float], Trace] = {}
    base_err: dict[int, torch.Tensor] = {}
    base_row: dict[int, dict[str, Any]] = {}
    for n, w, c in tqdm([(n, w, c) for n in steps for (w, c) in settings], disable=not progress, desc="demo"):
        run = evaluate(model, x0, edm_sigmas(n, sigma_max=sigma_max), ref.x, solver="heun", setting=Setting(w, c))
        row = measured_row(model.name, "heun", n, run, Setting(w, c), run.err if w == 0 else base_err.get(n),
                           distribution_metrics(run.x, truth, model.log_prob)).flat()
        if w == 0:
            base_err[n], base_row[n] = run.err, row
        row["verdict"] = _verdict(row, base_row.get(n))
        rows.append(row)
        finals[(n, w, c)] = run.x
        traces[(n, w, c)] = run.trace
    result = {
        "model": model.name,
        "num_samples": num_samples,
        "seed": seed,
        "reference": {"rtol": 1e-9, "max_gap_vs_100x_looser": ref_gap, "seconds": ref_seconds},
        "truth_vs_truth_sliced_w2": sliced_wasserstein(truth, model.sample(num_samples, seed=20_000 + seed, dtype=torch.float64)),
        "rows": rows,
    }
    if out_dir is not None:
        result["files"] = write_results(out_dir, "demo", result, format_table(rows),
                                        lambda p: plot_demo(p, model, truth, finals, traces, rows, steps, settings))
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of demo rows."""
    head = (
        "| NFE | w_stiff | w_con | err mean | err median | err / Heun [95% CI] | sliced W2 | energy | log-lik | gated | verdict |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        gated = "—" if r["w_stiff"] == 0 else f"{r['gated']:.2f}"
        ci = "—" if r["w_stiff"] == 0 else f"{r['err_ratio']:.3f} [{r['err_ratio_lo']:.3f}, {r['err_ratio_hi']:.3f}]"
        lines.append(
            f"| {r['nfe']:g} | {r['w_stiff']:g} | {r['w_con']:g} | {r['err_mean']:.4f} | {r['err_median']:.4f} | {ci} | "
            f"{r['sliced_w2']:.4f} | {r['energy']:.5f} | {r['loglik']:.2f} | {gated} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


def plot_demo(
    path: Path,
    model: GaussianMixture | LowRankMixture,
    truth: torch.Tensor,
    finals: dict[tuple[int, float, float], torch.Tensor],
    traces: dict[tuple[int, float, float], Trace],
    rows: list[dict[str, Any]],
    steps: tuple[int, ...],
    settings: tuple[tuple[float, float], ...],
) -> None:
    """Samples over the density for each setting at the second-smallest step count, rho along
    the run, and error vs NFE."""
    plt = pyplot()

    n_show = steps[1] if len(steps) > 1 else steps[0]
    cols = len(settings) + 1
    fig = plt.figure(figsize=(3.2 * cols, 6.6))
    g = torch.linspace(-1.3, 1.3, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    panels = [("true samples", truth)] + [
        (f"{'Heun' if w == 0 else f'ERK w={w:g}, c={c:g}'}\nNFE {2 * n_show - 1}", finals[(n_show, w, c)])
        for (w, c) in settings
    ]
    image = len(model.shape) == 3 and model.shape[0] == 1
    if not image:
        lp = model.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).reshape(200, 200)
        lp = lp.clamp_min(lp.max() - 10)
    for k, (title, pts) in enumerate(panels):
        ax = fig.add_subplot(2, cols, k + 1)
        if image:  # the first 16 samples as a 4 x 4 mosaic, [-1, 1] -> grey levels
            ax.imshow(image_tiles(pts, 4), cmap="gray", vmin=-1, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            continue
        ax.imshow(lp, origin="lower", extent=[-1.3, 1.3, -1.3, 1.3], cmap="Greys", alpha=0.6)
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="tab:red" if k else "tab:blue")
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(2, 2, 3)
    n_long = steps[-1]
    key = next((n_long, w, c) for (w, c) in settings if w > 0)
    rho = traces[key].rho
    sig = torch.tensor(traces[key].sigmas)
    ok = ~rho.isnan().all(1)
    q = torch.nanquantile(rho[ok], torch.tensor([0.1, 0.5, 0.9]), dim=1)
    ax.fill_between(sig[ok], q[0], q[2], alpha=0.3, label="10-90%")
    ax.plot(sig[ok], q[1], "o-", label="median")
    ax.axhline(key[2], color="k", ls="--", lw=0.8, label=f"w_con={key[2]:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("sigma (step start)")
    ax.set_ylabel("stiffness estimate rho")
    ax.set_title(f"rho along the run (Heun {n_long} steps, w_stiff={key[1]:g})", fontsize=9)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 2, 4)
    for w, c in settings:
        curve = [(r["nfe"], r["err_mean"]) for r in rows if r["w_stiff"] == w and r["w_con"] == c]
        ax.plot(*zip(*curve), "o-", label="Heun" if w == 0 else f"ERK w={w:g}, c={c:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("NFE")
    ax.set_ylabel("mean global error vs exact ODE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def image_tiles(x: torch.Tensor, cols: int, pad: int = 1) -> torch.Tensor:
    """The first ``cols * cols`` single-channel images ``[B, 1, H, W]`` as one ``[rows*(H+pad), cols*(W+pad)]`` mosaic."""
    n = min(cols * cols, x.shape[0])
    h, w = x.shape[-2:]
    rows = (n + cols - 1) // cols
    out = torch.full((rows * (h + pad), cols * (w + pad)), float("nan"), dtype=torch.float64)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = x[i].reshape(h, w).double().cpu()
    return out
