"""`erkguid profile`: per-step distributions of rho-hat, the gate and the correction size (choosing w_con).

One sampling pass over the step engine (:class:`erkguid.engine.Run`) that records, per step and per
sample, the stiffness estimate rho-hat (Eq. 17), the applied correction norm and the step length
||x_{i+1} - x_i||. The fraction of samples the gate beta = 1[rho-hat > w_con] (Eq. 19) switches on is
computed for several candidate thresholds from the same rho-hat values. The correction norms are
those of the run's own ``w_stiff`` / ``w_con`` (use ``w_con=0`` to see the correction everywhere).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._batch import bnorm, bsafe_div
from .._io import atomic_savefig
from ..engine import Run
from ._output import pyplot, write_results

DEFAULT_CANDIDATES = (0.05, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)


def _q(v: Tensor) -> list[float]:
    return torch.quantile(v.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()


def profile_run(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    solver: str = "heun",
    w_stiff: float = 1.0,
    w_con: float = 0.0,
    scaling: str = "z2",
    candidates: Sequence[float] = DEFAULT_CANDIDATES,
    solver_options: dict[str, Any] | None = None,
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Sample once and return per-step statistics (10/50/90th percentiles over samples).

    Returns ``{'steps': [{i, sigma, sigma_next, rho_q, gated: {w_con: fraction}, rel_corr_q, step_norm_q}],
    'overall': {'gated': {w_con: fraction}, 'rho_q', 'rel_corr_q'}, ...}``; steps without an ERK pair
    (the first Heun step, the final step to sigma = 0) have ``None`` statistics.
    """
    cands = [float(c) for c in candidates]
    if not cands or any(not math.isfinite(c) or c < 0 for c in cands):
        raise ValueError(f"candidates must be finite numbers >= 0, got {list(candidates)}")
    run = Run(denoiser, x, sigmas, solver=solver, w_stiff=w_stiff, w_con=w_con, scaling=scaling, want_pair=True,
              progress=progress, solver_options=solver_options, seeds=seeds, extra_args=extra)
    steps: list[dict[str, Any]] = []
    all_rho: list[Tensor] = []
    all_rel: list[Tensor] = []
    raw_rho: list[Tensor | None] = []
    prev = run.state.x
    for st in run:
        step_norm = bnorm(st.x - prev).float().cpu()
        prev = st.x
        row: dict[str, Any] = {"i": st.i, "sigma": st.sigma, "sigma_next": st.sigma_next, "step_norm_q": _q(step_norm)}
        corr = st.correction
        if corr is None:
            row.update(rho_q=None, gated=None, rel_corr_q=None)
            raw_rho.append(None)
        else:
            rho = corr.rho.float().cpu()
            norm = (corr.norm if st.applied else torch.zeros_like(corr.norm)).float().cpu()
            rel = bsafe_div(norm, step_norm)
            row.update(rho_q=_q(rho), gated={c: float((rho > c).float().mean()) for c in cands}, rel_corr_q=_q(rel))
            all_rho.append(rho)
            all_rel.append(rel)
            raw_rho.append(rho)
        steps.append(row)
    rho = torch.cat(all_rho) if all_rho else torch.zeros(0)
    overall = {
        "gated": {c: float((rho > c).float().mean()) if rho.numel() else 0.0 for c in cands},
        "rho_q": _q(rho) if rho.numel() else None,
        "rel_corr_q": _q(torch.cat(all_rel)) if all_rel else None,
    }
    return {"solver": solver, "w_stiff": w_stiff, "w_con": w_con, "scaling": scaling, "candidates": cands,
            "num_samples": int(x.shape[0]), "steps": steps, "overall": overall,
            "_raw": {"rho": raw_rho}}


def format_summary(res: dict[str, Any]) -> str:
    """A markdown table: one row per step with rho-hat percentiles, gated fractions and correction/step."""
    cands = res["candidates"]
    gated = " | ".join(f"gated w_con={c:g}" for c in cands)
    head = f"| step | sigma | rho-hat p10 / p50 / p90 | {gated} | corr/step p50 (p90) |"
    lines = [head, "|" + "---|" * (4 + len(cands))]
    for s in res["steps"]:
        if s["rho_q"] is None:
            lines.append(f"| {s['i']} | {s['sigma']:.4g} | — | " + " | ".join("—" for _ in cands) + " | — |")
            continue
        q, rc = s["rho_q"], s["rel_corr_q"]
        lines.append(f"| {s['i']} | {s['sigma']:.4g} | {q[0]:.3g} / {q[1]:.3g} / {q[2]:.3g} | "
                     + " | ".join(f"{s['gated'][c]:.2f}" for c in cands) + f" | {rc[1]:.3g} ({rc[2]:.3g}) |")
    o = res["overall"]
    lines.append("| all | | " + ("—" if o["rho_q"] is None else " / ".join(f"{v:.3g}" for v in o["rho_q"])) + " | "
                 + " | ".join(f"{o['gated'][c]:.2f}" for c in cands) + " | "
                 + ("—" if o["rel_corr_q"] is None else f"{o['rel_corr_q'][1]:.3g} ({o['rel_corr_q'][2]:.3g})") + " |")
    return "\n".join(lines) + "\n"


def plot_profile(res: dict[str, Any], path: Path, title: str = "") -> None:
    """Three panels over the steps: rho-hat distribution (with candidate w_con lines), gated fraction, correction/step."""
    plt = pyplot()

    st = [s for s in res["steps"] if s["rho_q"] is not None]
    idx = [s["i"] for s in st]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    raw = [r for r in res["_raw"]["rho"] if r is not None]
    if raw:
        axes[0].boxplot([r.clamp_min(1e-8).numpy() for r in raw], positions=idx, showfliers=False)
    for c in res["candidates"]:
        axes[0].axhline(max(c, 1e-8), ls=":", lw=0.7, color="gray")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step i")
    axes[0].set_ylabel("rho-hat (Eq. 17)")
    axes[0].set_title("rho-hat per step (dotted: candidate w_con)", fontsize=9)
    for c in res["candidates"]:
        axes[1].plot(idx, [s["gated"][c] for s in st], "o-", ms=3, label=f"w_con={c:g}")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("step i")
    axes[1].set_ylabel("fraction gated on (rho-hat > w_con)")
    axes[1].legend(fontsize=7)
    q = torch.tensor([s["rel_corr_q"] for s in st])
    if len(st):
        axes[2].fill_between(idx, q[:, 0], q[:, 2], alpha=0.3, label="10-90%")
        axes[2].plot(idx, q[:, 1], "o-", ms=3, label="median")
    axes[2].set_yscale("symlog", linthresh=1e-4)
    axes[2].set_xlabel("step i")
    axes[2].set_ylabel("||correction|| / ||x_{i+1} - x_i||")
    axes[2].set_title(f"correction size (w_stiff={res['w_stiff']:g}, w_con={res['w_con']:g})", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle(title or f"profile: {res['solver']}", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def save_profile(res: dict[str, Any], out_dir: str | Path, title: str = "") -> list[str]:
    """Write ``profile.json``, ``profile.md`` and ``profile.png``; return their paths."""
    clean = {k: v for k, v in res.items() if not k.startswith("_")}
    return write_results(out_dir, "profile", clean, format_summary(res), lambda p: plot_profile(res, p, title))
