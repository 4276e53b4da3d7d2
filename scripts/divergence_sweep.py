"""Calibrate the divergence guard of erkguid.sample (docs/validation.md).

Runs every shipped model x solver x grid x ERK-Guid setting with the guard's limit switched off and
records, per run, the largest ratio (state or applied correction norm) / the ODE's state scale the
guard computes (see erkguid._validate), and the final samples' largest norm relative to the data's
largest norm. A run whose final norm stays within 2x the data's is "healthy": the guard must never
fire on those (their peak ratio must be < DIVERGENCE_FACTOR); runs far beyond the data should.
In the JSON rows a run that raised (NaN/Inf) has ``peak_ratio`` and ``final_norm_over_data`` null.

    python scripts/divergence_sweep.py [--quick] [--out-dir runs/validation]

writes divergence_sweep.json (every run) and divergence_sweep_summary.{json,md} (the summary: docs/validation/) there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys

import torch
from tqdm.auto import tqdm

import erkguid as eg
from erkguid import _validate
from erkguid.experiments._output import write_results
from erkguid.solvers import shipped_for

PEAKS: list[float] = []
_FACTOR = _validate.DIVERGENCE_FACTOR


def _record_finish(self: _validate.RunGuard, stacklevel: int = 3) -> None:
    PEAKS.append(self.peak)


def _key(r: dict) -> tuple:
    return r["model"], r["solver"], r["steps"], r["schedule"], r["sigma_max"]


def models(quick: bool) -> dict[str, tuple[object, tuple[int, ...], float]]:
    """name -> (denoiser, sample shape, largest data norm)."""
    out = {}
    for name, m in (("tree2d", eg.tree_2d()), ("digits64", eg.digits_64d()), ("isotropic", eg.isotropic_gaussian())):
        data = m.sample(4000, seed=0, dtype=torch.float64)
        out[name] = (m, (m.dim,), float(data.norm(dim=1).max()))
    if not quick:
        for name, ref in (("learned:tree2d-main", "tree2d"), ("learned:digits-main", "digits64")):
            net = eg.load_learned(name.split(":")[1])
            out[name] = (net, out[ref][1], out[ref][2])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out-dir", default="runs/validation")
    args = ap.parse_args()
    torch.set_num_threads(1)
    _validate.DIVERGENCE_FACTOR = math.inf
    _validate.RunGuard.finish = _record_finish  # keep the peak; no warnings
    solvers = [s for s in eg.SOLVERS]
    steps = (3, 5, 8) if args.quick else (2, 3, 5, 8, 18)
    schedules = ("edm", "logsnr", "time_uniform") if args.quick else ("edm", "logsnr")
    sigma_max = (80.0, 2.0)
    erk = [(0.0, 0.0, "z2"), (1.0, 0.5, "z2")] + [(w, 0.0, sc) for w in (0.5, 1.0, 2.0) for sc in eg.SCALINGS]
    if args.quick:
        erk = [(0.0, 0.0, "z2"), (1.0, 0.0, "z2"), (1.0, 0.5, "z2"), (2.0, 0.0, "alpha")]
    rows = []
    combos = list(itertools.product(models(args.quick).items(), solvers, steps, schedules, sigma_max, erk))
    for (mname, (model, shape, data_norm)), solver, n, sched, smax, (w, c, sc) in tqdm(combos, mininterval=5):
        b = 32 if shape[0] <= 16 else 8
        if solver == "adasde":
            coef = shipped_for(mname.replace("learned:", "learned-"), 2 * n - 3) if smax == 80.0 else None
            if coef is None:
                continue
            grid, opts = coef.grid(), {"coefficients": coef}
        else:
            grid, opts = eg.get_sigmas(sched, n, sigma_max=smax), {}
        x0 = eg.randn_from_seeds(range(b), shape, sigma=float(grid[0]), dtype=torch.float64)
        seeds = range(b) if solver in ("heun_pc", "adasde") else None
        PEAKS.clear()
        try:
            out = eg.sample(model, x0, grid, solver=solver, w_stiff=w, w_con=c, scaling=sc, solver_options=opts,
                            seeds=seeds)
            final = float(out.norm(dim=1).max()) / data_norm if torch.isfinite(out).all() else math.inf
            peak, err = PEAKS[-1], None
        except (_validate.DivergenceError, _validate.NonFiniteError) as e:
            final, peak, err = math.inf, math.inf, str(e)[:80]
        rows.append({"model": mname, "solver": solver, "steps": n, "schedule": sched, "sigma_max": smax, "w_stiff": w,
                     "w_con": c, "scaling": sc, "peak_ratio": peak, "final_norm_over_data": final, "error": err})
    healthy = [r for r in rows if r["final_norm_over_data"] <= 2.0]
    blown = [r for r in rows if r["final_norm_over_data"] > 10.0]
    plain_final = {_key(r): r["final_norm_over_data"] for r in rows if r["w_stiff"] == 0.0}
    through = [r for r in blown if r["w_stiff"] > 0 and r["peak_ratio"] <= _FACTOR]
    summary = {
        "runs": len(rows),
        "healthy_runs (final norm <= 2x the data's largest)": len(healthy),
        "healthy_peak_ratio_max": max(r["peak_ratio"] for r in healthy),
        "blown_runs (final norm > 10x the data's largest)": len(blown),
        "guard_factor": _FACTOR,
        "blown_runs_caught": {f"{k:g}": sum(r["peak_ratio"] > k for r in blown) for k in (10, 20, 50, 100)},
        "healthy_runs_caught": {f"{k:g}": sum(r["peak_ratio"] > k for r in healthy) for k in (10, 20, 50, 100)},
        "largest_final_norm_over_data_let_through": max(r["final_norm_over_data"] for r in rows if r["peak_ratio"] <= _FACTOR),
        "runs_ending_beyond_1000x_data": sum(r["final_norm_over_data"] > 1000 for r in rows),
        "of_which_raised": sum(r["final_norm_over_data"] > 1000 and r["peak_ratio"] > _FACTOR for r in rows),
        "blown_plain_solver_runs (w_stiff=0, never size-checked)": sum(r["w_stiff"] == 0 for r in blown),
        "blown_erk_runs_let_through": len(through),
        "of_which_the_plain_solver_also_ends_beyond_10x": sum(plain_final.get(_key(r), 0.0) > 10.0 for r in through),
    }
    worst = sorted(healthy, key=lambda r: -r["peak_ratio"])[:5]
    strict = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    write_results(args.out_dir, "divergence_sweep", {"summary": summary, "worst_healthy": worst, "rows": strict})
    short = {"command": "python scripts/divergence_sweep.py " + " ".join(sys.argv[1:]), "summary": summary,
             "worst_healthy": worst}
    json.dump(short, sys.stdout, indent=1, default=str)
    print()
    print(format_table(summary))
    for f in write_results(args.out_dir, "divergence_sweep_summary", short, format_table(summary)):
        print("wrote", f)


def format_table(summary: dict) -> str:
    """docs/validation.md's table: healthy and blown runs, and how many a guard factor of 10 / 20 / 50 / 100 raises on."""
    def caught(key: str) -> str:
        return " / ".join(str(summary[key][k]) for k in ("10", "20", "50", "100"))

    healthy, blown = (summary[k] for k in ("healthy_runs (final norm <= 2x the data's largest)",
                                            "blown_runs (final norm > 10x the data's largest)"))
    return "\n".join([
        "| runs | final samples' largest norm | largest ratio seen | raised at factor 10 / 20 / 50 / 100 |",
        "|---|---|---|---|",
        f'| {healthy} "healthy" | <= 2x the data\'s largest norm | {summary["healthy_peak_ratio_max"]:.1f} | '
        f'{caught("healthy_runs_caught")} |',
        f'| {blown} "blown" | > 10x the data\'s largest norm | - | {caught("blown_runs_caught")} |',
    ])


if __name__ == "__main__":
    main()
