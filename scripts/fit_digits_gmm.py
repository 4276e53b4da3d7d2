"""Fit the shipped 64-D digits mixture (src/erkguid/data/digits_gmm.npz). Dev-only: needs scikit-learn.

Deterministic: scikit-learn's 8x8 digits scaled to [-1, 1] (v / 8 - 1); per class, a
``--per-class``-component full-covariance Gaussian mixture (k-means init, fixed random_state)
with ``--reg`` added to every covariance diagonal. Run: python scripts/fit_digits_gmm.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from erkguid.models import digits_data

OUT = Path(__file__).resolve().parents[1] / "src" / "erkguid" / "data" / "digits_gmm.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=2)
    ap.add_argument("--reg", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    xt, yt = digits_data(torch.float64)
    x, y = xt.numpy(), yt.numpy()
    weights, means, covs, labels = [], [], [], []
    for c in range(10):
        xc = x[y == c]
        gm = GaussianMixture(args.per_class, covariance_type="full", reg_covar=args.reg, random_state=0, n_init=1)
        gm.fit(xc)
        weights.append(gm.weights_ * len(xc) / len(x))
        means.append(gm.means_)
        covs.append(gm.covariances_)
        labels.append(np.full(args.per_class, c))
    np.savez_compressed(
        args.out,
        weights=np.concatenate(weights).astype(np.float64),
        means=np.concatenate(means).astype(np.float32),
        covs=np.concatenate(covs).astype(np.float32),
        labels=np.concatenate(labels).astype(np.int64),
        reg=np.float64(args.reg),
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
