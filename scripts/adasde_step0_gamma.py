"""AdaSDE distillation with and without the official step-0 gamma update (DistillConfig.official_step0_gamma).

Distils tree2d at 5 NFE twice from the same seed and batches (60 iterations x batch 128, gamma_max 0.01) and
prints/saves the learned gamma per step and the per-step losses against the teacher on a fixed evaluation batch.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/adasde_step0_gamma.py [--out docs/accuracy]
"""

from __future__ import annotations

import argparse

import torch

import erkguid as eg
from erkguid.experiments._output import write_results
from erkguid.training import DistillConfig, distill_adasde
from erkguid.training.adasde import evaluate_losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/accuracy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, res = eg.tree_2d(), {}
    for official in (False, True):
        cfg = DistillConfig(nfe=5, iters=60, batch=128, gamma_max=0.01, seed=0, official_step0_gamma=official)
        coef = distill_adasde(model, cfg, progress=True).coefficients
        res[f"official_step0_gamma={official}"] = {"gamma": coef.table()["gamma"],
                                                   "eval_losses": evaluate_losses(model, coef, (2,), cfg)}
    off, on = res["official_step0_gamma=False"], res["official_step0_gamma=True"]
    res["gamma_rel_diff"] = [abs(a - b) / abs(b) for a, b in zip(on["gamma"][1:], off["gamma"][1:])]
    for k, v in res.items():
        print(k, v)
    for f in write_results(args.out, "adasde_step0_gamma", res):
        print("wrote", f)


if __name__ == "__main__":
    main()
