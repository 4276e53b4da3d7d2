"""`erkguid tune`: choose (w_stiff, w_con) for a model, solver and NFE budget, then check it held out.

Objective ``error``: mean global error vs. a reference solve of the same model from the same noise
(accuracy of the ODE solve). Objective ``fd``: Frechet distance to reference data in the target's
feature space. The grid always contains the plain solver (0, 0), so the chosen preset can be "off".
The gain is re-measured on a disjoint held-out batch of seeds with paired bootstrap intervals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..solvers import SOLVERS
from .bench import max_steps
from .paper import TARGET_MODELS, Evaluator, make_target

W_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
WCON_GRID = (0.0, 0.05, 0.25, 0.5, 1.0)
HELDOUT_SEED = 100_000


def tune(target: str, solver: str = "heun", nfe: int = 15, *, objective: str = "error", calib: int = 256,
         heldout: int = 512, w_grid: tuple[float, ...] = W_GRID, wcon_grid: tuple[float, ...] = WCON_GRID,
         rtol: float = 1e-6, progress: bool = True) -> dict[str, Any]:
    """Grid-search (w_stiff, w_con) on ``calib`` seeds, report the held-out gain; returns the preset dict."""
    if objective not in ("error", "fd"):
        raise ValueError(f"objective must be 'error' or 'fd', got {objective!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    steps = max_steps(solver, nfe)
    if steps is None or steps < 2:
        raise ValueError(f"nfe={nfe} is too small for solver {solver!r}")
    tgt = make_target(target)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cal = Evaluator(tgt, calib, seed=0, rtol=rtol)

        def score(w: float, c: float) -> float:
            r = cal.run(solver, steps, w, c)
            return float(r.err.mean()) if objective == "error" else cal.ref.fd(r.feats)

        grid = [(0.0, 0.0)] + [(w, c) for w in w_grid for c in wcon_grid]
        scores = {(w, c): score(w, c) for w, c in tqdm(grid, disable=not progress, desc=f"tune {target} {solver}")}
        best = min(scores, key=lambda k: scores[k])
        held = Evaluator(tgt, heldout, seed=HELDOUT_SEED, rtol=rtol)
        row = held.row("tune", solver, steps, best[0], best[1])
    finally:
        torch.set_num_threads(threads)
    return {
        "target": target, "model": TARGET_MODELS[target], "solver": solver, "steps": steps, "nfe": row.nfe,
        "w_stiff": best[0], "w_con": best[1],
        "scaling": "z2", "objective": objective,
        "calibration": {"seeds": [0, calib], "baseline": scores[(0.0, 0.0)], "best": scores[best],
                        "grid": [{"w_stiff": w, "w_con": c, "score": s} for (w, c), s in scores.items()]},
        "heldout": {"seeds": [HELDOUT_SEED, HELDOUT_SEED + heldout], "err_mean": row.err_mean, "err_ratio": row.err_ratio,
                    "err_ratio_ci": [row.err_ratio_lo, row.err_ratio_hi], "fd": row.fd, "fd_delta": row.fd_delta,
                    "fd_delta_ci": [row.fd_delta_lo, row.fd_delta_hi], "precision": row.precision, "recall": row.recall},
    }


PRESET_KEYS = ("solver", "steps", "w_stiff", "w_con", "scaling")


def save_preset(preset: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(preset, indent=2) + "\n")
    return p


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a preset written by ``erkguid tune``; checks the keys ``erkguid sample`` needs (``model``, a model
    spec of :func:`erkguid.generate.resolve_model`, is derived from ``target`` for older presets)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"preset file not found: {p}")
    d = json.loads(p.read_text())
    if "model" not in d and d.get("target") in TARGET_MODELS:  # presets written before the "model" key
        d["model"] = TARGET_MODELS[d["target"]]
    missing = [k for k in ("model", *PRESET_KEYS) if k not in d]
    if missing:
        raise ValueError(f"preset {p} lacks keys {missing}")
    return d
