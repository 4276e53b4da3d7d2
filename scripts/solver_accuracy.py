"""Accuracy of DEIS tAB vs rhoAB vs logrho (diffusers' DEIS) and of the higher-order solvers, plain and with ERK-Guid.

Error = mean per-sample distance at sigma = 0 to the adaptive float64 reference solution from the same
noise (erkguid.reference_solve, rtol 1e-7), beside the sliced W2 distance to true samples of the
mixture. Prints markdown tables and writes docs/accuracy/solver_accuracy.{json,md}.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/solver_accuracy.py [--samples 256] [--out docs/accuracy]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from tqdm.auto import tqdm

import erkguid as eg
from erkguid.experiments._output import write_results
from erkguid.metrics import global_error, sliced_wasserstein

MODELS = (("tree2d", (2,)), ("digits64", (64,)))
NFES = (5, 7, 11, 15, 23, 31)
DEIS_VARIANTS = [(mode, order) for mode in ("tab", "rhoab", "logrho") for order in (3, 4)]
GRIDS = {"edm": lambda n: eg.edm_sigmas(n), "time_uniform_rho2": lambda n: eg.vp_time_uniform_sigmas(n, rho=2.0)}
SOLVERS = {  # label -> (solver, options)
    "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc3_bh1": ("unipc", {"order": 3, "variant": "bh1"}),
    "unipc3_bh2": ("unipc", {"order": 3, "variant": "bh2"}),
    "lms4": ("lms", {"order": 4}),
}
STRENGTHS = ((0.0, 0.0), (0.25, 0.05), (1.0, 0.05), (2.5, 0.05))  # (w_stiff, w_con); the first is plain


def _row(model, x0, ref, truth, sig, solver, options, w, c) -> dict[str, Any]:
    x = eg.sample(model, x0, sig, solver=solver, solver_options=options, w_stiff=w, w_con=c,
                  check_divergence=False)  # a diverging setting is measured and marked "(hurts)", not refused
    err = global_error(x, ref)
    return {"err_mean": float(err.mean()), "err_median": float(err.median()), "sliced_w2": sliced_wasserstein(x, truth)}


def run(samples: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    out: dict[str, Any] = {"samples": samples, "nfe": list(NFES), "deis": [], "solvers": []}
    for mname, shape in MODELS:
        model = eg.get_model(mname)
        x0 = eg.randn_from_seeds(range(samples), shape, sigma=80.0, dtype=torch.float64)
        ref = eg.reference_solve(model, x0, 80.0, rtol=1e-7, atol=1e-8).x
        truth = model.sample(samples, seed=10_000, dtype=torch.float64)
        out.setdefault("truth_vs_ref_sliced_w2", {})[mname] = sliced_wasserstein(ref, truth)
        jobs = [(g, m, o, n) for g in GRIDS for m, o in DEIS_VARIANTS for n in NFES]
        for grid, mode, order, n in tqdm(jobs, desc=f"deis {mname}", leave=False):
            r = _row(model, x0, ref, truth, GRIDS[grid](n), "deis", {"mode": mode, "order": order}, 0.0, 0.0)
            out["deis"].append({"model": mname, "grid": grid, "mode": mode, "order": order, "nfe": n, **r})
        jobs2 = [(label, n, w, c) for label in SOLVERS for n in NFES for w, c in STRENGTHS]
        for label, n, w, c in tqdm(jobs2, desc=f"solvers {mname}", leave=False):
            solver, options = SOLVERS[label]
            r = _row(model, x0, ref, truth, eg.edm_sigmas(n), solver, options, w, c)
            out["solvers"].append({"model": mname, "solver": label, "nfe": n, "w_stiff": w, "w_con": c, **r})
    return out


def _find(rows: list[dict[str, Any]], **key: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r[k] == v for k, v in key.items()))


def markdown(res: dict[str, Any]) -> str:
    lines = [f"DEIS, mean error vs reference ({res['samples']} samples; sliced W2 to true samples in brackets)", ""]
    head = " | ".join(f"{m}{o}" for m, o in DEIS_VARIANTS)
    lines += [f"| model | grid | NFE | {head} |", "|---|---|---|" + "---|" * len(DEIS_VARIANTS)]
    for mname, _ in MODELS:
        for grid in GRIDS:
            for n in NFES:
                cells = []
                for mode, order in DEIS_VARIANTS:
                    r = _find(res["deis"], model=mname, grid=grid, mode=mode, order=order, nfe=n)
                    cells.append(f"{r['err_mean']:.4f} [{r['sliced_w2']:.4f}]")
                lines.append(f"| {mname} | {grid} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Higher-order solvers on the EDM grid: mean error vs reference [sliced W2]; "
              "ERK columns are (w_stiff, w_con)", ""]
    heads = ["plain" if w == 0 else f"ERK ({w}, {c})" for w, c in STRENGTHS]
    lines += ["| model | solver | NFE | " + " | ".join(heads) + " |", "|---|---|---|" + "---|" * len(STRENGTHS)]
    for mname, _ in MODELS:
        for label in SOLVERS:
            for n in NFES:
                rows = [_find(res["solvers"], model=mname, solver=label, nfe=n, w_stiff=w) for w, _ in STRENGTHS]
                base = rows[0]["err_mean"]
                cells = [f"{rows[0]['err_mean']:.4f} [{rows[0]['sliced_w2']:.4f}]"]
                for r in rows[1:]:
                    mark = " (hurts)" if r["err_mean"] > base else ""
                    cells.append(f"{r['err_mean']:.4f} [{r['sliced_w2']:.4f}]{mark}")
                lines.append(f"| {mname} | {label} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Reference vs true samples, sliced W2 (the floor of that column): "
              + ", ".join(f"{k} {v:.4f}" for k, v in res["truth_vs_ref_sliced_w2"].items())]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--out", default="docs/accuracy")
    args = ap.parse_args()
    res = run(args.samples)
    md = markdown(res)
    print(md)
    for f in write_results(args.out, "solver_accuracy", res, md):
        print("wrote", f)


if __name__ == "__main__":
    main()
