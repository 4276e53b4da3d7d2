"""`erkguid tune`: choose (w_stiff, w_con) for a model, solver and NFE budget, then check it held out.

Objective ``error``: mean global error vs. a reference solve of the same model from the same noise
(accuracy of the ODE solve). Objective ``fd``: Frechet distance to reference data in the target's
feature space. The grid always contains the plain solver (0, 0), so the chosen preset can be "off".
The gain is re-measured on a disjoint held-out batch of seeds with paired bootstrap intervals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._io import atomic_write_json, read_json_object
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
PRESET_TYPES: dict[str, Any] = {"model": str, "solver": str, "steps": int, "w_stiff": (int, float), "w_con": (int, float),
                                "scaling": str}
MAX_PRESET_BYTES = 2**20


def save_preset(preset: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, preset)
    return p


def load_preset(path: str | Path) -> dict[str, Any]:
    """Read a preset written by ``erkguid tune``; checks the keys ``erkguid sample`` needs (``model``, a model
    spec of :func:`erkguid.generate.resolve_model`, is derived from ``target`` for older presets)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"preset file not found: {p}")
    d = read_json_object(p, what="preset", max_bytes=MAX_PRESET_BYTES)
    if "model" not in d and d.get("target") in TARGET_MODELS:  # presets written before the "model" key
        d["model"] = TARGET_MODELS[d["target"]]
    missing = [k for k in ("model", *PRESET_KEYS) if k not in d]
    if missing:
        raise ValueError(f"preset {p} lacks keys {missing}")
    for k, kind in PRESET_TYPES.items():
        v = d[k]
        ok = isinstance(v, str) if kind is str else (not isinstance(v, bool) and isinstance(v, kind))
        if not ok or (kind is not str and not math.isfinite(v)):
            want = {str: "a string", int: "an integer", float: "a finite number"}[kind if kind in (str, int) else float]
            raise ValueError(f"preset {p}: {k!r} must be {want}, got {v!r}")
    if d["steps"] < 1 or d["w_stiff"] < 0 or d["w_con"] < 0:
        raise ValueError(f"preset {p}: need steps >= 1, w_stiff >= 0, w_con >= 0; got steps={d['steps']}, "
                         f"w_stiff={d['w_stiff']}, w_con={d['w_con']}")
    return d
