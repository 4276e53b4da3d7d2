"""`erkguid reproduce NAME`: the paper's analysis figures on exact-score models (Sec. 4.1-4.2, 5.1, App. B.1-B.2).

Every target returns ``{'name', 'claims': [...], ...data}`` and writes ``NAME.json``, ``NAME.md`` (one
markdown row per claim: paper's number, ours, verdict) and ``NAME.png``. ``quick=True`` shrinks every
size so that a target runs in seconds (used by the tests); the numbers in REPRODUCTION.md come from
the full runs.

Conventions where the paper is silent (documented in REPRODUCTION.md):
* trajectories are class-conditional (class drawn per sample from its seed), exact scores, plain Heun
  on the EDM grid (sigma_max = 80), float64;
* alignment = fraction of the vector's norm in the dominant EIGENSPACE span{v_k : |lambda_k| >= 0.95 |lambda_max|}
  (:func:`erkguid.diagnostics.eigenspace_alignment`); it equals the paper's |cos(u, v_1)| when lambda_max is
  simple and stays meaningful when it is degenerate (digits64 near a component, any model at large sigma).
  Each bin also reports the median dim S and the random-direction baseline sqrt(dim S / d); the verdicts use
  the excess over that baseline, (a - b) / (1 - b). The v_1 cosines (|cos| and the signed cosine under the
  paper's orientation <v, f> >= 0) are kept in the JSON for comparison;
* the weak model of autoguidance is the same mixture with every covariance doubled (``broadened(2)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import diagnostics as dg
from .._batch import append_dims, bdot
from .._io import atomic_savefig
from ..correction import alpha, estimate
from ..engine import Run
from ..models import GaussianMixture, get_model, tree_2d
from ..noise import randn_from_seeds
from ..schedules import edm_sigmas
from ._output import pyplot, write_results

SIGMA_MAX = 80.0
BIN_NAMES = ("Q0-25", "Q25-50", "Q50-75", "Q75-100")


CLEAR = 0.1  # an alignment difference that counts as clear
STRONG = 0.5  # an excess over the random baseline that counts as clearly aligned


def claim(figure: str, text: str, paper: str, ours: str, verdict: str, note: str = "") -> dict[str, str]:
    """One row of the reproduction table; ``note`` gives the reason when the verdict is not 'yes'."""
    return {"figure": figure, "claim": text, "paper": paper, "ours": ours, "verdict": verdict, "note": note}


def _chunked(fn: Callable[[Tensor], Any], x: Tensor, size: int = 4096) -> list[Any]:
    return [fn(x[i : i + size]) for i in range(0, x.shape[0], size)]


def _spectrum_chunked(model: GaussianMixture, x: Tensor, sigma: float, **extra: Any) -> dg.Spectrum:
    parts = _chunked(lambda xx: dg.exact_spectrum(model, xx, sigma, **extra), x)
    return dg.Spectrum(torch.cat([p.eigvals for p in parts]), torch.cat([p.eigvecs for p in parts]))


# --------------------------------------------------------------------------------------- Fig. 1 / Table 1
def _table1_verdict(dist: dict[str, dict[str, float]]) -> tuple[str, str]:
    """'yes' when both median ratios exceed 3x over the top 1% and 10%; 'partly' when only over the top 1%."""
    ok = {k: d["lte_ratio_median"] > 3 and d["diff_ratio_median"] > 3 for k, d in dist.items()}
    if all(ok.values()):
        return "yes", ""
    if ok["top1pct"]:
        return "partly", "only among the top 1% stiffest points; over the top 10% a median ratio is below 3x"
    return "no", "the single-point ratios do not carry over to the stiffest 1% of points"


def _table1_components(model: GaussianMixture, x: Tensor, sigma: float, sigma_next: float) -> dict[str, Tensor]:
    """Per point: |LTE| and |ERK difference| of one Heun step along the dominant / subdominant eigenvectors, their
    ratios and z = h |lambda_max| (Table 1; LTE against 100 Heun substeps)."""
    spc = dg.exact_spectrum(model, x, sigma)
    v1, v2 = spc.vector(0, (2,)), spc.vector(1, (2,))
    x_heun, x_euler = dg.heun_euler_step(model, x, sigma, sigma_next)
    ref = dg.substep_reference(model, x, sigma, sigma_next, substeps=100)
    lte, diff = ref - x_heun, x_heun - x_euler
    out = {"lte_dominant": bdot(lte, v1).abs(), "lte_subdominant": bdot(lte, v2).abs(),
           "diff_dominant": bdot(diff, v1).abs(), "diff_subdominant": bdot(diff, v2).abs(),
           "z_dominant": -(sigma - sigma_next) * spc.eigvals[:, 0]}
    out["lte_ratio"] = out["lte_dominant"] / out["lte_subdominant"].clamp_min(1e-300)
    out["diff_ratio"] = out["diff_dominant"] / out["diff_subdominant"].clamp_min(1e-300)
    return out


def run_fig1(quick: bool = False, progress: bool = True, model: str | None = None) -> dict[str, Any]:
    """Stiffness map of the 2-D tree at step 29 of 32, drift in the local eigenbasis, Table 1 (``model`` unused)."""
    tree = tree_2d()
    grid = edm_sigmas(32, sigma_max=SIGMA_MAX)
    i = 28  # the 29th of 32 steps
    sigma, sigma_next = float(grid[i]), float(grid[i + 1])
    n = 24 if quick else 100
    g = torch.linspace(-1.3, 1.3, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    sp = _spectrum_chunked(tree, pts, sigma)
    logp = torch.cat(_chunked(lambda xx: tree.log_prob(xx, sigma), pts))
    # stiff centre: the stiffest grid point among those the sampler visits (log p within 6 nats of the max)
    visited = logp > logp.max() - 6.0
    stiff_c = pts[sp.stiffness.masked_fill(~visited, -1).argmax()][None]
    calm_c = torch.tensor([[0.0, -0.75]], dtype=torch.float64)  # middle of the trunk
    half = 4.0 * sigma
    regions: dict[str, dict[str, Any]] = {}
    for name, c in (("non-stiff", calm_c), ("stiff", stiff_c)):
        spc = dg.exact_spectrum(tree, c, sigma)
        v = spc.eigvecs[0]  # [2, 2], columns dominant/subdominant
        t = torch.linspace(-half, half, 41, dtype=torch.float64)
        lines = {}
        for k, axis in ((0, "dominant"), (1, "subdominant")):
            line = c + t[:, None] * v[:, k][None]
            proj = dg.drift_fn(tree, sigma)(line) @ v  # drift in the local eigen-coordinates
            lines[axis] = {"t": t.tolist(), "proj_dominant": proj[:, 0].tolist(), "proj_subdominant": proj[:, 1].tolist(),
                           "variation": float((proj.diff(dim=0).norm(dim=1) / t.diff()).max())}  # max |d proj / dt|
        regions[name] = {"centre": c[0].tolist(), "eigvals": spc.eigvals[0].tolist(), "eigvecs": v.tolist(), "lines": lines}
    # Table 1: one step from the stiff centre
    comp = _table1_components(tree, stiff_c, sigma, sigma_next)
    tab = {k: float(v[0]) for k, v in comp.items()}
    tab["h"] = sigma - sigma_next
    # the verdict depends on the chosen point: the same ratios over the stiffest visited points
    order = sp.stiffness.masked_fill(~visited, -1).argsort(descending=True)
    n_vis = int(visited.sum())
    dist: dict[str, dict[str, float]] = {}
    for label, frac in (("top1pct", 0.01), ("top10pct", 0.10)):
        k = max(1, round(frac * n_vis))
        top = _table1_components(tree, pts[order[:k]], sigma, sigma_next)
        dist[label] = {"points": k, **{f"{r}_{stat}": float(top[r].max()) if stat == "max" else float(top[r].median())
                                      for r in ("lte_ratio", "diff_ratio") for stat in ("max", "median")},
                       "frac_both_above_3": float(((top["lte_ratio"] > 3) & (top["diff_ratio"] > 3)).double().mean())}
    table: dict[str, Any] = dict(tab)
    table["distribution"] = {"visited_points": n_vis, **dist}
    tab = table
    var = {f"{k} {ax}": r["lines"][ax]["variation"] for k, r in regions.items() for ax in ("dominant", "subdominant")}
    others = max(v for k, v in var.items() if k != "stiff dominant")
    claims = [
        claim("Fig. 1", "drift varies strongly only along the stiff region's dominant axis (panel d vs b, c, e)",
              "qualitative", "max rate of change of the projected drift along the line: "
              + ", ".join(f"{k} {v:.3g}" for k, v in var.items()), "yes" if var["stiff dominant"] > 3 * others else "no"),
        claim("Table 1", "single-step LTE: dominant (EF) vs subdominant (GH) axis",
              "7.22e-05 vs 5.78e-06 (12.5x)",
              f"{tab['lte_dominant']:.2e} vs {tab['lte_subdominant']:.2e} ({tab['lte_ratio']:.1f}x)",
              "yes" if tab["lte_ratio"] > 3 else "no"),
        claim("Table 1", "ERK solution difference: dominant vs subdominant axis",
              "4.03e-04 vs 6.18e-05 (6.5x)",
              f"{tab['diff_dominant']:.2e} vs {tab['diff_subdominant']:.2e} ({tab['diff_ratio']:.1f}x)",
              "yes" if tab["diff_ratio"] > 3 else "no"),
        claim("Table 1", "the dominant-axis share holds beyond the single stiffest point (LTE / ERK-difference ratio, "
              "median over the top 1% and 10% stiffest visited grid points)", "one point",
              "; ".join(f"{lab.replace('top', 'top ').replace('pct', '%')} ({d['points']} pts): median "
                        f"{d['lte_ratio_median']:.1f}x / {d['diff_ratio_median']:.1f}x, max {d['lte_ratio_max']:.1f}x / "
                        f"{d['diff_ratio_max']:.1f}x, both > 3x at {100 * d['frac_both_above_3']:.0f}%"
                        for lab, d in dist.items()),
              *_table1_verdict(dist)),
    ]
    return {"name": "fig1", "sigma": sigma, "sigma_next": sigma_next, "step": i + 1, "grid_n": n,
            "stiff_centre": stiff_c[0].tolist(), "regions": regions, "table1": tab, "claims": claims,
            "_plot": {"pts": pts, "stiffness": sp.stiffness, "n": n, "logp": logp}}


def plot_fig1(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    p = res["_plot"]
    n = p["n"]
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
    ax = axes[0]
    im = ax.imshow(p["stiffness"].reshape(n, n).log10().numpy(), origin="lower", extent=[-1.3, 1.3, -1.3, 1.3], cmap="magma")
    fig.colorbar(im, ax=ax, label="log10 |lambda_max|")
    for name, mk in (("non-stiff", "c"), ("stiff", "lime")):
        r = res["regions"][name]
        c, v = torch.tensor(r["centre"]), torch.tensor(r["eigvecs"])
        for k, ls in ((0, "-"), (1, "--")):
            a, b = c - 0.15 * v[:, k], c + 0.15 * v[:, k]
            ax.plot([a[0], b[0]], [a[1], b[1]], ls, color=mk, lw=1.5)
    ax.set_title(f"(a) stiffness, step {res['step']}/32, sigma={res['sigma']:.4f}", fontsize=9)
    panels = [("non-stiff", "dominant", "(b) non-stiff, dominant axis"),
              ("non-stiff", "subdominant", "(c) non-stiff, subdominant"),
              ("stiff", "dominant", "(d) stiff, dominant axis (EF)"), ("stiff", "subdominant", "(e) stiff, subdominant (GH)")]
    for ax, (reg, axis, title) in zip(axes[1:], panels):
        ln = res["regions"][reg]["lines"][axis]
        t = torch.tensor(ln["t"])
        u, w = torch.tensor(ln["proj_dominant"]), torch.tensor(ln["proj_subdominant"])
        along = u if axis == "dominant" else w
        across = w if axis == "dominant" else u
        ax.quiver(t[::4], torch.zeros_like(t[::4]), along[::4], across[::4], angles="xy", color="tab:blue")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(title + f"\nvariation {ln['variation']:.3g}", fontsize=9)
        ax.set_xlabel(f"position along the {axis} eigenvector")
        ax.set_yticks([])
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- trajectories
_COLLECTED: dict[tuple[Any, ...], dict[str, Tensor]] = {}


def collect_cached(name: str, progress: bool, **sizes: int) -> dict[str, Tensor]:
    """:func:`collect` on a built-in model, computed once per process (fig2 and fig3 share it under ``all``)."""
    key = (name, *sorted(sizes.items()))
    if key not in _COLLECTED:
        model = get_model(name)
        if not isinstance(model, GaussianMixture):
            raise ValueError(f"the paper's analysis figures need a dense-covariance mixture (exact Jacobians), got {name!r}")
        _COLLECTED[key] = collect(model, progress=progress, **sizes)
    return _COLLECTED[key]


def collect(
    model: GaussianMixture,
    num_samples: int,
    *,
    steps: int = 32,
    substeps: int = 100,
    seed: int = 0,
    weak_factor: float = 2.0,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Run class-conditional Heun (exact scores, no guidance) and measure, at every step with an ERK pair:

    reference stiffness and spectrum (exact Jacobian), rho-hat (Eq. 17), the dominant eigenspace's dimension
    and random baseline, and for each of: the one-step LTE vs ``substeps`` Heun substeps, the one-step ERK
    solution difference (Heun - Euler), the pair's drift difference (v-hat, Eq. 18) and solution difference,
    the ERK-Guid, CFG and autoguidance directions, its dominant-eigenspace alignment ``al_*`` and its signed
    cosine ``cos_*`` with v_1. Returns flat ``[num_steps_used * B]`` tensors.
    """
    seeds = list(range(seed, seed + num_samples))
    gen = torch.Generator().manual_seed(seed + 12345)
    labels = torch.randint(model.num_classes, (num_samples,), generator=gen) if model.num_classes else None
    extra = {} if labels is None else {"class_labels": labels}
    weak = model.broadened(weak_factor)
    x = randn_from_seeds(seeds, model.shape, sigma=SIGMA_MAX, dtype=torch.float64)
    grid = edm_sigmas(steps, sigma_max=SIGMA_MAX)

    rows: dict[str, list[Tensor]] = {}
    run = Run(model, x, grid[:-1], solver="heun", want_pair=True, extra_args=extra)  # every step but the one onto 0
    for out in tqdm(run, total=steps - 1, disable=not progress, desc=f"collect {model.name}", leave=False):
        i, s, sn = out.i, out.sigma, out.sigma_next
        if out.pair is not None:
            p = out.pair
            pf, px_alt, pf_alt = p.full()  # want_pair=True: full pairs
            sp = dg.exact_spectrum(model, x, s, **extra)
            v1 = sp.vector(0, model.shape)
            ref = dg.substep_reference(model, x, s, sn, substeps=substeps, **extra)
            est = estimate(p)
            f_uncond = dg.drift_fn(model, s)(x)
            f_weak = dg.drift_fn(weak, s, **extra)(x)
            dirs = {
                "lte": ref - out.x,
                "sol_diff_step": out.x - run.state.carry.x_euler,
                "drift_diff": pf - pf_alt,
                "sol_diff_pair": p.x - px_alt,
                "erk": -append_dims(bdot(pf, est.v), x.ndim) * est.v,
                "cfg": pf - f_uncond,
                "ag": pf - f_weak,
            }
            vals = {"stiffness": sp.stiffness, "rho_hat": est.rho, "step": torch.full_like(est.rho, i),
                    "z": (s - sn) * sp.stiffness}
            for k, d in dirs.items():
                vals[f"cos_{k}"] = dg.cosine(d, v1)
                al = dg.eigenspace_alignment(d, sp)
                vals[f"al_{k}"] = al.alignment
            vals["dom_dim"], vals["baseline"] = al.dim.double(), al.random_baseline()
            for k, val in vals.items():
                rows.setdefault(k, []).append(val.detach().double())
        x = out.x
    return {k: torch.cat(v) for k, v in rows.items()}


def _bins(data: dict[str, Tensor], keys: list[str]) -> dict[str, Any]:
    """Per stiffness quartile: median eigenspace alignment and v_1 cosines of each direction, dim S, baseline."""
    b = dg.quantile_bins(data["stiffness"], 4)
    return {
        "alignment": {k: {"eigenspace": dg.binned_median(data[f"al_{k}"], b),
                          "v1_abs_cos": dg.binned_median(data[f"cos_{k}"].abs(), b),
                          "v1_signed_cos": dg.binned_median(data[f"cos_{k}"], b)} for k in keys},
        "dominant_dim": dg.binned_median(data["dom_dim"], b),
        "random_baseline": dg.binned_median(data["baseline"], b),
        "fraction_S_is_everything": [float((data["baseline"][b == k] >= 1 - 1e-12).double().mean()) for k in range(4)],
    }


def excess(a: float, base: float) -> float:
    """Alignment relative to the random baseline, in [-1, 1]: 1 = entirely in S, 0 = random, -1 = orthogonal to S.

    ``(a - base) / (1 - base)`` above the baseline, ``(a - base) / base`` below it; 0 where S is the whole space
    (every vector is then fully 'aligned' and alignment says nothing).
    """
    if base >= 1.0 - 1e-9:
        return 0.0
    return (a - base) / (1.0 - base) if a >= base else (a - base) / base


def _fmt(v: list[float], f: str = ".2f") -> str:
    return " / ".join(format(c, f) for c in v)


def _grows(al: list[float], base: list[float], high: float | None = None, steadily: bool = True) -> tuple[str, str]:
    """Verdict for 'alignment grows (steadily) with stiffness' from the :func:`excess` over random per bin.

    'yes': the top bin is clearly aligned (excess >= STRONG, alignment >= ``high`` if given), clearly above the
    bottom two bins, and (``steadily``) no bin falls by more than CLEAR below an earlier one; 'partly': the top
    bin is above the bottom bins and above random but one of those fails; 'no' otherwise.
    """
    e = [excess(a, b) for a, b in zip(al, base)]
    top, bottom = e[-1], max(e[0], e[1])
    steady = not steadily or all(e[j] >= max(e[:j]) - CLEAR for j in range(1, 4))
    why = f"excess over random {_fmt(e)}"
    if top >= STRONG and top - bottom >= CLEAR and steady and (high is None or al[-1] >= high):
        return "yes", ""
    if top > bottom and top > CLEAR:
        if high and al[-1] < high:
            return "partly", f"{why}; top-bin alignment {al[-1]:.2f} < {high}"
        if top < STRONG:
            return "partly", f"{why}; top bin only weakly above random"
        if top - bottom < CLEAR:
            return "partly", f"{why}; the rise over the bottom bins is small"
        low = min(range(4), key=lambda j: e[j])
        return "partly", f"{why}; top bin clearly aligned but not steady: {BIN_NAMES[low]} is below random"
    return "no", why + ("; the top bin is not above the bottom bins" if top <= bottom else "; top bin near random")


def _dims(med: dict[str, Any], d: int) -> str:
    return f"(random baseline {_fmt(med['random_baseline'])}; median dim S {_fmt(med['dominant_dim'], '.0f')} of {d})"


def _models(quick: bool, model: str | None) -> list[str]:
    if model:
        return [model]
    return ["tree2d"] if quick else ["tree2d", "digits64"]


def _sizes(quick: bool, name: str) -> dict[str, int]:
    if quick:
        return {"num_samples": 8, "steps": 8, "substeps": 10}
    return {"num_samples": 128 if name == "tree2d" else 32, "steps": 32, "substeps": 100}


def run_fig2(quick: bool = False, progress: bool = True, model: str | None = None) -> dict[str, Any]:
    """Fig. 2: dominant-eigenspace alignment of LTE / ERK solution difference / guidance directions per stiffness bin."""
    res: dict[str, Any] = {"name": "fig2", "models": {}, "claims": []}
    for name in _models(quick, model):
        data = collect_cached(name, progress, **_sizes(quick, name))
        med = _bins(data, ["lte", "sol_diff_step", "erk", "cfg", "ag"])
        d = get_model(name).dim
        res["models"][name] = {"bins": list(BIN_NAMES), **med, "dim": d, "n": int(data["stiffness"].numel()),
                               "stiffness_edges": torch.quantile(data["stiffness"], torch.tensor([0.25, 0.5, 0.75],
                                                                 dtype=torch.float64)).tolist()}
        al = {k: v["eigenspace"] for k, v in med["alignment"].items()}
        base = med["random_baseline"]
        lte, sol = al["lte"], al["sol_diff_step"]
        erk, cfg, ag = al["erk"][-1], al["cfg"][-1], al["ag"][-1]
        v2a, n2a = _grows(lte, base)  # the paper: "steadily increases with stiffness"
        v2b, n2b = _grows(sol, base, high=0.8, steadily=False)  # the paper: "strongly aligns when stiffness is high"
        e_erk = excess(erk, base[-1])
        if e_erk >= STRONG and erk - max(cfg, ag) >= CLEAR:
            v2c, n2c = "yes", ""
        elif erk > max(cfg, ag):
            v2c, n2c = "partly", f"ERK-Guid ahead by only {erk - max(cfg, ag):.2f}" + (
                f"; excess over random {e_erk:.2f}" if e_erk < STRONG else "")
        else:
            v2c, n2c = "no", "ERK-Guid is not the most aligned direction in Q75-100"
        res["claims"] += [
            claim("Fig. 2a", f"[{name}] LTE alignment with the dominant eigenspace grows with stiffness",
                  "increasing over Q0-25..Q75-100", f"{_fmt(lte)} {_dims(med, d)}", v2a, n2a),
            claim("Fig. 2b", f"[{name}] ERK solution difference aligns with the dominant eigenspace at high stiffness",
                  "increasing, high in Q75-100", f"{_fmt(sol)} {_dims(med, d)}", v2b, n2b),
            claim("Fig. 2c", f"[{name}] ERK-Guid direction beats CFG and autoguidance in Q75-100", "ERK-Guid highest",
                  f"ERK {erk:.2f}, CFG {cfg:.2f}, AG {ag:.2f} (random baseline {base[-1]:.2f}, "
                  f"median dim S {med['dominant_dim'][-1]:.0f} of {d})", v2c, n2c),
        ]
    return res


def plot_fig2(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(res["models"])
    fig, axes = plt.subplots(len(names), 3, figsize=(13, 3.6 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        m = res["models"][name]
        med = m["alignment"]
        xs = list(range(4))
        dims = ", ".join(f"{c:.0f}" for c in m["dominant_dim"])
        row[0].bar(xs, med["lte"]["eigenspace"], color="tab:red", label="dominant eigenspace")
        row[0].plot(xs, med["lte"]["v1_abs_cos"], "kx", label="|cos| with v1")
        row[0].set_title(f"(a) {name}: LTE (median dim S: {dims})", fontsize=9)
        row[1].bar(xs, med["sol_diff_step"]["eigenspace"], color="tab:orange", label="dominant eigenspace")
        row[1].plot(xs, med["sol_diff_step"]["v1_abs_cos"], "kx", label="|cos| with v1")
        row[1].set_title(f"(b) {name}: x_Heun - x_Euler", fontsize=9)
        for j, (k, lab) in enumerate((("erk", "ERK-Guid"), ("cfg", "CFG"), ("ag", "Autoguidance"))):
            row[2].bar([x + 0.27 * (j - 1) for x in xs], med[k]["eigenspace"], width=0.27, label=lab)
        row[2].set_title(f"(c) {name}: guidance directions", fontsize=9)
        for ax in row:
            ax.plot(xs, m["random_baseline"], "_", color="k", ms=28, mew=2, label="random sqrt(dim S / d)")
            ax.set_xticks(xs, BIN_NAMES)
            ax.set_ylim(0, 1.3)
            ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
            ax.set_xlabel("stiffness quantile bin")
            ax.set_ylabel("median ||P_S u|| / ||u||")
            ax.legend(fontsize=6, loc="upper center", ncol=2)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- Fig. 3
def run_fig3(quick: bool = False, progress: bool = True, model: str | None = None) -> dict[str, Any]:
    """Fig. 3: rho-hat vs the reference |lambda_max| (Pearson, Spearman); drift vs solution difference alignment."""
    from scipy.stats import pearsonr, spearmanr

    res: dict[str, Any] = {"name": "fig3", "models": {}, "claims": [], "_plot": {}}
    for name in _models(quick, model):
        data = collect_cached(name, progress, **_sizes(quick, name))
        rho, ref = data["rho_hat"].numpy(), data["stiffness"].numpy()
        pr, sr = float(pearsonr(rho, ref)[0]), float(spearmanr(rho, ref)[0])
        plog = float(pearsonr(torch.log10(data["rho_hat"].clamp_min(1e-12)).numpy(), torch.log10(data["stiffness"]).numpy())[0])
        med = _bins(data, ["drift_diff", "sol_diff_pair"])
        ratio = (data["rho_hat"] / data["stiffness"]).median()
        d = get_model(name).dim
        res["models"][name] = {"pearson": pr, "spearman": sr, "pearson_log10": plog,
                               "median_ratio_rho_hat_over_ref": float(ratio),
                               "bins": list(BIN_NAMES), **med, "dim": d, "n": int(rho.size)}
        res["_plot"][name] = (data["rho_hat"], data["stiffness"])
        dd, sd = med["alignment"]["drift_diff"]["eigenspace"], med["alignment"]["sol_diff_pair"]["eigenspace"]
        e_dd = excess(dd[-1], med["random_baseline"][-1])
        wins = sum(a >= b for a, b in zip(dd, sd))
        if dd[-1] - sd[-1] >= CLEAR and wins >= 3 and e_dd >= STRONG:
            v3b, n3b = "yes", ""
        elif dd[-1] >= sd[-1]:
            v3b, n3b = "partly", (f"drift difference ahead by only {dd[-1] - sd[-1]:.2f} in Q75-100" if dd[-1] - sd[-1] < CLEAR
                                  else f"ahead in {wins}/4 bins" if wins < 3 else f"excess over random only {e_dd:.2f}")
        else:
            v3b, n3b = "no", "the solution difference is more aligned in Q75-100"
        res["claims"] += [
            claim("Fig. 3a", f"[{name}] rho-hat correlates strongly with the JVP reference |lambda_max|", "strong correlation",
                  f"Pearson {pr:.3f}, Spearman {sr:.3f} (log-log Pearson {plog:.3f}), median rho-hat/ref {float(ratio):.2f}",
                  "yes" if sr > 0.8 else "partly" if sr > 0.5 else "no"),
            claim("Fig. 3b", f"[{name}] drift difference aligns with the dominant eigenspace better than the solution "
                  "difference, esp. at high stiffness", "drift diff > solution diff",
                  f"drift {_fmt(dd)}; sol {_fmt(sd)} {_dims(med, d)}", v3b, n3b),
        ]
    return res


def plot_fig3(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(res["models"])
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.8 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        rho, ref = res["_plot"][name]
        m = res["models"][name]
        row[0].loglog(ref, rho.clamp_min(1e-6), ".", ms=2, alpha=0.4)
        lo, hi = float(ref.min()), float(ref.max())
        row[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
        row[0].set_xlabel("reference |lambda_max| (exact Jacobian)")
        row[0].set_ylabel("rho-hat (Eq. 17)")
        row[0].set_title(f"(a) {name}: Pearson {m['pearson']:.3f}, Spearman {m['spearman']:.3f}", fontsize=9)
        xs = range(4)
        al = m["alignment"]
        row[1].plot(xs, al["drift_diff"]["eigenspace"], "o-", color="tab:blue", label="ERK drift difference (v-hat)")
        row[1].plot(xs, al["sol_diff_pair"]["eigenspace"], "o-", color="tab:orange", label="ERK solution difference")
        row[1].plot(xs, al["drift_diff"]["v1_abs_cos"], "x:", color="tab:blue", alpha=0.6, label="(drift diff, |cos| with v1)")
        row[1].plot(xs, al["sol_diff_pair"]["v1_abs_cos"], "x:", color="tab:orange", alpha=0.6, label="(sol diff, |cos| with v1)")
        row[1].plot(xs, m["random_baseline"], "k--", lw=0.8, label="random sqrt(dim S / d)")
        row[1].set_xticks(list(xs), BIN_NAMES)
        row[1].set_ylim(0, 1.3)
        row[1].set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        row[1].set_ylabel("median ||P_S u|| / ||u||")
        dims = ", ".join(f"{c:.0f}" for c in m["dominant_dim"])
        row[1].set_title(f"(b) {name}: eigenspace alignment (median dim S: {dims})", fontsize=9)
        row[1].legend(fontsize=6, loc="upper center", ncol=2)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- Fig. 6a
def run_fig6a(quick: bool = False, progress: bool = True, model: str | None = None) -> dict[str, Any]:
    """Fig. 6a: alpha(z) (Eq. 15) against its quadratic approximation z^2 / 6 (Eq. 45) (``model`` unused)."""
    z = torch.linspace(-4, 4, 81 if quick else 801, dtype=torch.float64)
    a, q = alpha(z), z**2 / 6
    rel = ((a - q).abs() / a.clamp_min(1e-300)).where(z != 0, torch.zeros_like(z))
    within = {f"|z|<={r}": float(rel[z.abs() <= r].max()) for r in (0.1, 0.5, 1.0)}  # ~ |z|/4 (next term z^3/24)
    at = {f"z={v:g}": {"alpha": float(alpha(torch.tensor(float(v), dtype=torch.float64))), "z2_over_6": v * v / 6}
          for v in (-3, -1, 1, 3)}
    claims = [
        claim("Fig. 6a", "alpha(z) ~ z^2/6 near 0 (relative gap -> 0 like |z|/4)", "alpha = z^2/6 + O(z^3)",
              "max rel. gap " + ", ".join(f"{k}: {v:.3f}" for k, v in within.items()),
              "yes" if within["|z|<=0.1"] <= 0.03 and within["|z|<=0.5"] < within["|z|<=1.0"] else "no"),
        claim("Fig. 6a", "alpha grows exponentially for large z, z^2 does not", "qualitative",
              f"alpha(3) = {at['z=3']['alpha']:.2f} vs 9/6 = 1.5; alpha(-3) = {at['z=-3']['alpha']:.2f}",
              "yes" if at["z=3"]["alpha"] > 2 * 1.5 else "no"),
    ]
    return {"name": "fig6a", "max_rel_gap": within, "values": at, "min_alpha": float(a.min()), "claims": claims,
            "_plot": (z, a, q)}


def plot_fig6a(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    z, a, q = res["_plot"]
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(z, a, label="alpha(z)")
    ax.plot(z, q, "--", label="z^2 / 6")
    ax.set_xlabel("z")
    ax.set_ylim(0, 6)
    ax.legend()
    ax.set_title("Fig. 6a: alpha(z) vs its quadratic approximation", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- Fig. 7
def run_fig7(quick: bool = False, progress: bool = True, model: str | None = None) -> dict[str, Any]:
    """Fig. 7: JVP power-iteration convergence |rho_k - rho_final| along a Heun run (median, quartiles)."""
    name = model or ("tree2d" if quick else "digits64")
    m = get_model(name)
    num, steps, iters = (4, 6, 40) if quick else (8, 32, 300)
    seeds = list(range(num))
    x = randn_from_seeds(seeds, m.shape, sigma=SIGMA_MAX, dtype=torch.float64)
    grid = edm_sigmas(steps, sigma_max=SIGMA_MAX)
    hist, rel_exact, al_space, cos_v1, dims = [], [], [], [], []
    run = Run(m, x, grid[:-1], solver="heun")  # every step but the one onto 0
    for step in tqdm(run, total=steps - 1, disable=not progress, desc=f"power iteration {name}", leave=False):
        i, s = step.i, step.sigma
        pw = dg.power_iteration(m, x, s, iters=iters, seeds=[1000 * i + k for k in seeds])
        hist.append((pw.history - pw.history[-1]).abs() / pw.history[-1])
        ex = dg.exact_spectrum(m, x, s)
        rel_exact.append((pw.stiffness - ex.stiffness).abs() / ex.stiffness)
        al = dg.eigenspace_alignment(pw.vector, ex)
        al_space.append(al.alignment)
        dims.append(al.dim.double())
        cos_v1.append(dg.cosine(pw.vector, ex.vector(0, m.shape)).abs())
        x = step.x
    h = torch.cat(hist, dim=1)  # [iters, steps * B]
    q = torch.quantile(h, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=1)
    rel = torch.cat(rel_exact)
    al_s, c1, dim_s = torch.cat(al_space), torch.cat(cos_v1), torch.cat(dims)
    ks = [k for k in (10, 50, 100, 200) if k < iters]
    degenerate = float((dim_s > 1).double().mean())
    vec = {"eigenspace_alignment_median": float(al_s.median()), "eigenspace_alignment_p10": float(al_s.quantile(0.1)),
           "v1_abs_cos_median": float(c1.median()), "dominant_dim_median": float(dim_s.median()),
           "fraction_degenerate": degenerate}
    claims = [
        claim("Fig. 7", f"[{name}] {iters} JVP power iterations converge (the eigenvalue; the vector only to the "
              "dominant eigenspace when lambda_max is degenerate)", "errors decrease rapidly and stabilise",
              "median rel. |rho_k - rho_final|: " + ", ".join(f"k={k}: {float(q[1, k - 1]):.1e}" for k in ks)
              + f"; final vs exact eigh: median {float(rel.median()):.1e}, 90th pct {float(rel.quantile(0.9)):.1e}"
              + f"; final vector: median eigenspace alignment {vec['eigenspace_alignment_median']:.3f} "
              f"(10th pct {vec['eigenspace_alignment_p10']:.3f}) but median |cos| with v1 {vec['v1_abs_cos_median']:.2f}; "
              f"dim S > 1 at {100 * degenerate:.0f}% of states (median {vec['dominant_dim_median']:.0f})",
              "yes" if float(rel.median()) < 1e-3 else "partly",
              "" if float(rel.median()) < 1e-3 else "the final eigenvalue is not within 1e-3 of the exact one"),
    ]
    return {"name": "fig7", "model": name, "iters": iters, "num_samples": num, "steps": steps,
            "quartiles_rel_err": q.tolist(), "final_vs_exact_median": float(rel.median()),
            "final_vs_exact_p90": float(rel.quantile(0.9)), "vector": vec, "claims": claims, "_plot": q}


def plot_fig7(res: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    q = res["_plot"]
    k = torch.arange(1, q.shape[1] + 1)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.semilogy(k, q[1].clamp_min(1e-16), "-", label="median")
    ax.semilogy(k, q[0].clamp_min(1e-16), "--", color="gray", label="25th / 75th pct")
    ax.semilogy(k, q[2].clamp_min(1e-16), "--", color="gray")
    ax.set_xlabel("power iteration k")
    ax.set_ylabel("|rho_k - rho_final| / rho_final")
    ax.set_title(f"Fig. 7: JVP power iteration on {res['model']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------------------- driver
TARGETS: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[dict[str, Any], Path], None]]] = {
    "fig1": (run_fig1, plot_fig1),
    "fig2": (run_fig2, plot_fig2),
    "fig3": (run_fig3, plot_fig3),
    "fig6a": (run_fig6a, plot_fig6a),
    "fig7": (run_fig7, plot_fig7),
}
ALIASES = {"table1": "fig1"}
NAMES = (*TARGETS, *ALIASES, "all")




def format_rows(claims: list[dict[str, str]], command: str) -> str:
    """Markdown rows: figure | claim | paper | ours | command | reproduces."""
    lines = ["| figure | claim | paper | ours | command | reproduces |", "|---|---|---|---|---|---|"]
    cells = [{f: c[f].replace("|", "\\|") for f in c} for c in claims]  # a literal | breaks the table
    lines += [f"| {c['figure']} | {c['claim']} | {c['paper']} | {c['ours']} | `{command}` | "
              f"{c['verdict']}{' (' + c['note'] + ')' if c.get('note') else ''} |" for c in cells]
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _plot_to(plot: Callable[[dict[str, Any], Path], None], res: dict[str, Any]) -> Callable[[Path], None]:
    return lambda p: plot(res, p)


def reproduce(name: str, out_dir: str | Path = "runs/reproduce", *, quick: bool = False, progress: bool = True,
              **kwargs: Any) -> list[dict[str, Any]]:
    """Run one target (or ``all``), write ``NAME.{json,md,png}`` under ``out_dir``, return the results."""
    if name not in NAMES:
        raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}")
    names = list(TARGETS) if name == "all" else [ALIASES.get(name, name)]
    results = []
    for n in names:
        run, plot = TARGETS[n]
        res = run(quick=quick, progress=progress, **kwargs)
        cmd = f"erkguid reproduce {n}{' --quick' if quick else ''}"
        res["files"] = write_results(out_dir, n, _jsonable(res), format_rows(res["claims"], cmd),
                                     _plot_to(plot, res))
        res["command"] = cmd
        results.append(res)
    return results
