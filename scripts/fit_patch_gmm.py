"""Fit the shipped patch mixtures ``patches16`` / ``patches32`` (build time only; needs scikit-image).

    python scripts/fit_patch_gmm.py --size 16 --rank 32            # -> src/erkguid/data/patches16_gmm.npz
    python scripts/fit_patch_gmm.py --size 32 --rank 48            # -> src/erkguid/data/patches32_gmm.npz

Non-overlapping grayscale patches of scikit-image's CC0 / public-domain photographs at three
scales (:mod:`erkguid.training.patches`), EM in float64 from a seeded k-means++ start with a fixed
iteration count; parameters are stored in float32 and *define* the model (the package evaluates
them in float64). The covariance floor (per component, >= ``--floor-min``) is stored with them.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from erkguid.generate import atomic_write, npz_bytes
from erkguid.training.patches import SCALES, SOURCES, fit_lowrank_mixture, patches

DATA = Path(__file__).resolve().parents[1] / "src" / "erkguid" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16, help="patch side (d = size^2)")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--iters", type=int, default=12, help="EM iterations (fixed count)")
    ap.add_argument("--seed", type=int, default=0, help="k-means++ seed")
    ap.add_argument("--floor-min", type=float, default=1e-4, help="lower bound of each component's covariance floor")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default: src/erkguid/data/patches<size>_gmm.npz")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or DATA / f"patches{args.size}_gmm.npz"
    t0 = time.perf_counter()
    x, counts = patches(args.size)
    t_data = time.perf_counter() - t0
    params, log = fit_lowrank_mixture(x, args.components, args.rank, iters=args.iters, seed=args.seed, floor_min=args.floor_min)
    info = {
        "name": f"patches{args.size}", "patch_size": args.size, "scales": list(SCALES), "num_patches": int(len(x)),
        "components": args.components, "rank": args.rank, "iters": args.iters, "seed": args.seed, "floor_min": args.floor_min,
        "sources": {k: SOURCES[k] for k in SOURCES}, "counts": counts, "value_range": [-1.0, 1.0],
        "loglik_per_patch_float64_fit": log["loglik_per_patch"][-1], "nats_per_dim": log["nats_per_dim"],
        "fit_seconds": round(log["seconds"], 1), "data_seconds": round(t_data, 1), "threads": args.threads,
        "command": f"python scripts/fit_patch_gmm.py --size {args.size} --rank {args.rank} --components {args.components} "
                   f"--iters {args.iters} --seed {args.seed} --floor-min {args.floor_min:g}",
    }
    arrays = {k: params[k].astype(np.float32) for k in ("weights", "means", "factors", "floor")}
    arrays["shape"] = np.array([1, args.size, args.size], dtype=np.int64)
    arrays["info"] = np.array(json.dumps(info))
    atomic_write(out, npz_bytes(zipfile.ZIP_DEFLATED, **arrays))
    print(json.dumps({k: v for k, v in info.items() if k not in ("sources", "counts")}, indent=1))
    print(f"loglik per EM iteration: {[round(v, 2) for v in log['loglik_per_patch']]}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
