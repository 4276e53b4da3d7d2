"""DEIS mode "logrho" against diffusers' DEISMultistepScheduler, and its convergence order on a Gaussian mixture.

1. Equality: diffusers' own loop (float64 sigmas, model output D as prediction_type="sample") against
   ``erkguid.sample(solver="deis", solver_options={"mode": "logrho", ...})`` on the scheduler's grid, state by state
   (max abs difference and the largest |x| for scale), orders 1-3, lower_order_final on/off, several step counts.
2. Order: error at sigma_min = 0.1 against an adaptive float64 reference (rtol 1e-12) on tree2d (exact mixture score),
   from sigma 5, N = 32-256, for logrho, tab and rhoab at orders 1-4 (slope of log error vs log N per doubling).

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/deis_logrho_check.py [--out docs/accuracy]
Writes OUT/deis_logrho_check.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests: diffusers' DEIS loop on a denoiser

import erkguid as eg  # noqa: E402
from erkguid.experiments._output import write_results  # noqa: E402
from tests.test_solvers import _diffusers_deis_states  # noqa: E402

CONFIGS = [(4, True, "linspace"), (10, False, "linspace"), (10, True, "trailing"), (16, True, "linspace"),
           (20, True, "linspace"), (50, True, "linspace")]
NS = (32, 64, 128, 256)


def equality() -> list[dict[str, Any]]:
    from diffusers import DEISMultistepScheduler

    model, rows = eg.tree_2d(), []
    for order in (1, 2, 3):
        for steps, lof, spacing in CONFIGS:
            sch = DEISMultistepScheduler(solver_order=order, prediction_type="sample", lower_order_final=lof,
                                         timestep_spacing=spacing)
            sch.set_timesteps(steps)
            x0 = eg.randn_from_seeds(range(64), (2,), sigma=float(sch.sigmas[0]), dtype=torch.float64)
            ref = _diffusers_deis_states(sch, model, x0)
            got: list[torch.Tensor] = []
            eg.sample(model, x0, sch.sigmas, solver="deis", solver_options={"mode": "logrho", "order": order,
                                                                          "lower_order_final": lof},
                      callback=lambda info: got.append(info["x"]))  # noqa: B023
            diff = max(float((a - b).abs().max()) for a, b in zip(got, ref))
            rows.append({"order": order, "steps": steps, "lower_order_final": lof, "spacing": spacing,
                         "max_abs_diff": diff, "max_abs_x": max(float(b.abs().max()) for b in ref)})
    return rows


def orders() -> list[dict[str, Any]]:
    model, smax, smin = eg.tree_2d(), 5.0, 0.1
    x0 = eg.randn_from_seeds(range(8), (2,), sigma=smax, dtype=torch.float64)
    ref = eg.reference_solve(model, x0, smax, sigma_end=smin, rtol=1e-12, atol=1e-13).x
    rows = []
    jobs = [(mode, k) for mode in ("logrho", "tab", "rhoab") for k in (1, 2, 3, 4)]
    for mode, k in tqdm(jobs, desc="orders", leave=False):
        errs = [float((eg.sample(model, x0, eg.edm_sigmas(n, smin, smax)[:-1], solver="deis",
                                 solver_options={"mode": mode, "order": k}) - ref).norm(dim=1).max()) for n in NS]
        slopes = (-np.diff(np.log(errs)) / np.log(2)).tolist()
        rows.append({"mode": mode, "order": k, "n": list(NS), "err_max": errs, "slopes": slopes})
    return rows


def markdown(res: dict[str, Any]) -> str:
    lines = ["logrho vs diffusers DEISMultistepScheduler (tree2d, 64 samples, states at every step)", "",
             "| order | steps | lower_order_final | spacing | max abs diff | max abs x |", "|---|---|---|---|---|---|"]
    for r in res["equality"]:
        lines.append(f"| {r['order']} | {r['steps']} | {r['lower_order_final']} | {r['spacing']} | "
                     f"{r['max_abs_diff']:.2e} | {r['max_abs_x']:.1f} |")
    lines += ["", "Max error at sigma_min = 0.1 vs adaptive reference (tree2d, 8 samples, sigma 5 -> 0.1, EDM grid); "
              "slope per doubling of N in brackets", "",
              "| mode | order | " + " | ".join(f"N={n}" for n in NS) + " |", "|---|---|" + "---|" * len(NS)]
    for r in res["orders"]:
        cells = [f"{r['err_max'][0]:.2e}"] + [f"{e:.2e} [{s:.2f}]" for e, s in zip(r["err_max"][1:], r["slopes"])]
        lines.append(f"| {r['mode']} | {r['order']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/accuracy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import diffusers

    res = {"diffusers": diffusers.__version__, "equality": equality(), "orders": orders()}
    md = markdown(res)
    print(md)
    for f in write_results(args.out, "deis_logrho_check", res, md):
        print("wrote", f)


if __name__ == "__main__":
    main()
