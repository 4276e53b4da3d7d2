"""Measure how far a sample's result depends on the rest of its batch (README "Guarantees").

For each model, dtype and solver: sample 16 seeds as one batch, then the same 16 seeds in chunks of
b = 1, 2, 3, 4, 5, 8, and print the largest |difference| against the batch of 16 (0 = bit-identical).
The "elementwise" model (its output row depends only on its input row, with no matrix product) shows
what erkguid itself guarantees; the shipped models use matrix products whose BLAS kernels may change
with the batch size.

    python scripts/batch_invariance.py [--out-dir runs/validation]   (writes batch_invariance.json there)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import erkguid as eg
from erkguid.experiments._output import write_results

CHUNKS = (1, 2, 3, 4, 5, 8)


def elementwise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    sig = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return torch.tanh(x) * 0.5 * sig / (1 + sig) + x * 0.25 / (0.25 + sig**2)


def models() -> dict[str, tuple[object, int]]:
    return {
        "elementwise": (elementwise, 64),
        "tree2d": (eg.tree_2d(), 2),
        "digits64": (eg.digits_64d(), 64),
        "learned:tree2d-main": (eg.load_learned("tree2d-main"), 2),
        "learned:digits-main": (eg.load_learned("digits-main"), 64),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default="runs/validation")
    ap.add_argument("--steps", type=int, default=18)
    args = ap.parse_args()
    grid = eg.edm_sigmas(args.steps)
    rows = []
    for name, (model, dim) in models().items():
        for dtype in (torch.float32, torch.float64):
            x0 = eg.randn_from_seeds(range(16), (dim,), sigma=80.0, dtype=dtype)
            for solver, w in (("heun", 1.0), ("dpm2", 1.0), ("dpmpp_2m", 0.0), ("unipc", 0.0), ("heun_pc", 0.0)):
                kw = {"solver": solver, "w_stiff": w, "w_con": 0.5}
                seeds = list(range(16))
                full = eg.sample(model, x0, grid, seeds=seeds, **kw)
                row = {"model": name, "dtype": str(dtype).replace("torch.", ""), "solver": solver, "w_stiff": w}
                for b in CHUNKS:
                    parts = [eg.sample(model, x0[k:k + b], grid, seeds=seeds[k:k + b], **kw) for k in range(0, 16, b)]
                    row[f"max_abs_diff_b{b}"] = float((torch.cat(parts) - full).abs().max())
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for r in rows:
        key = f"{r['model']}/{r['dtype']}"
        summary[key] = max(summary.get(key, 0.0), *(r[f"max_abs_diff_b{b}"] for b in CHUNKS))
    result = {"grid_steps": args.steps, "torch": torch.__version__, "summary_max_abs_diff": summary, "rows": rows}
    write_results(args.out_dir, "batch_invariance", result)
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
