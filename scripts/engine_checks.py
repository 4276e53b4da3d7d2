"""Grids ending above 0 and split grids, against one run and against k-diffusion (max abs differences).

For every deterministic solver (and heun_pc with seeds) on the 2-D tree (64 samples, float64, 12 EDM steps,
sigma_max = 80): a grid ending at sigma_min vs the full run's state at sigma_min, and sigmas[:k+1] continued
by sigmas[k:] vs one run (k = 4, 8), with ERK-Guid on (w_stiff = 1, w_con = 0.5); Heun, DPM-Solver-2 and
DPM-Solver++(2M) with w_stiff = 0 on the sigma_min grid vs k-diffusion's sample_heun / sample_dpm_2 /
sample_dpmpp_2m. Prints and saves JSON.

Usage: PYTHONPATH=src python scripts/engine_checks.py [--out runs/engine_checks.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import erkguid as eg
from erkguid._io import atomic_write_json
from erkguid._validate import sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests._kdiff_ref import load_kdiff_sampling  # noqa: E402

SOLVERS = ["euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc", "heun_pc"]
KDIFF = {"heun": "sample_heun", "dpm2": "sample_dpm_2", "dpmpp_2m": "sample_dpmpp_2m"}


@sweep  # settings whose gate stays shut on some solvers are part of the check
def main() -> None:
    torch.set_num_threads(1)
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path("runs/engine_checks.json")
    model = eg.tree_2d()
    sig = eg.edm_sigmas(12)
    x0 = eg.randn_from_seeds(range(64), (2,), sigma=80.0, dtype=torch.float64)
    kw = {"w_stiff": 1.0, "w_con": 0.5, "seeds": list(range(64)), "check_divergence": False}  # equality, not quality
    res: dict[str, dict[str, float]] = {}
    for s in SOLVERS:
        states: list[torch.Tensor] = []
        one = eg.sample(model, x0, sig, solver=s, callback=lambda info, st=states: st.append(info["x"]), **kw)
        row = {"sigma_min_grid_vs_one_run": float((eg.sample(model, x0, sig[:-1], solver=s, **kw) - states[-2]).abs().max())}
        for k in (4, 8):
            state = eg.Run(model, x0, sig[: k + 1], solver=s, **kw).finish()
            two = eg.sample(model, state, sig[k:], solver=s, w_stiff=1.0, w_con=0.5, check_divergence=False)
            row[f"split_at_{k}_vs_one_run"] = float((two - one).abs().max())
        if s in KDIFF:
            ref = getattr(load_kdiff_sampling(), KDIFF[s])(model, x0.clone(), sig[:-1], disable=True)
            row["sigma_min_grid_vs_k_diffusion"] = float((eg.sample(model, x0, sig[:-1], solver=s) - ref).abs().max())
        res[s] = row
        print(s, json.dumps(row), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)


if __name__ == "__main__":
    main()
