"""Grayscale patches of scikit-image's CC0 / public-domain photographs, and the low-rank mixture fit.

Build-time only (``scripts/fit_patch_gmm.py``, ``erkguid train patches16-unet``): needs
scikit-image, whose wheel bundles the photographs; the package itself only reads the fitted
``.npz`` files and the trained weights. Each photograph is converted to grayscale in [0, 1]
(``skimage.color.rgb2gray`` for colour), averaged over 2x2 and 4x4 blocks for the coarser scales,
cut into non-overlapping ``size x size`` patches at every scale, and mapped to [-1, 1].

The fit is EM for a mixture of probabilistic PCA models (Tipping & Bishop 1999): each M-step
sets C_k = U_r diag(l - f_k) U_r^T + f_k I from the top-r eigenpairs (l, U_r) of the weighted
covariance, with f_k the mean of the remaining eigenvalues, floored at ``floor_min``. Everything
is float64 and deterministic: k-means++ from a fixed seed, fixed iteration counts, eigenvector
signs fixed (largest-magnitude entry positive).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

# name -> the licence as scikit-image's data docstring states it (only CC0 / public domain).
SOURCES: dict[str, str] = {
    "astronaut": "No known copyright restrictions, released into the public domain (NASA).",
    "brick": "Creative Commons CC0 License (CC0Textures, Bricks25).",
    "camera": "No copyright restrictions. CC0 by the photographer (Lav Varshney).",
    "cell": "CC0, dedicated to the public domain.",
    "chelsea": "No copyright restrictions. CC0 by the photographer (Stefan van der Walt).",
    "clock": "Released into the public domain by the photographer (Stefan van der Walt).",
    "coffee": "No copyright restrictions. CC0 by the photographer (Rachel Michetti).",
    "grass": "Creative Commons CC0 License (DeviantArt, linolafett, Grass-01).",
    "gravel": "Creative Commons CC0 License (CC0Textures, Gravel04).",
    "horse": "No copyright restrictions. CC0 given by owner (Andreas Preuss (marauder)).",
    "hubble_deep_field": "Captured by NASA; may be freely used in the public domain.",
    "microaneurysms": "No copyright restrictions. CC0 given by owner (Andreas Maier).",
    "retina": "Creative Commons CC0 1.0 Universal Public Domain Dedication (Mikael Häggström).",
    "rocket": "Captured by SpaceX and released in the public domain.",
    "text": "No known copyright restrictions, released into the public domain.",
}
SCALES = (1, 2, 4)


def photographs() -> dict[str, np.ndarray]:
    """The source photographs as float64 grayscale arrays in [0, 1] (needs scikit-image)."""
    try:
        import skimage.data
        from skimage.color import rgb2gray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the patch data needs scikit-image (build time only): pip install scikit-image") from e
    out = {}
    for name in SOURCES:
        im = np.asarray(getattr(skimage.data, name)())
        if im.dtype == bool:
            g = im.astype(np.float64)
        elif im.ndim == 3:
            g = rgb2gray(im[..., :3]).astype(np.float64)
        else:
            g = im.astype(np.float64) / 255.0
        out[name] = g
    return out


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """Average over non-overlapping ``factor x factor`` blocks (the image cropped to a multiple)."""
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    return img[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def patches(size: int = 16, scales: tuple[int, ...] = SCALES) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """All non-overlapping ``size x size`` patches of every photograph at every scale, in [-1, 1]:
    ``(x [N, size*size] float64, counts)`` with one ``{"image", "scale", "patches"}`` entry per source."""
    rows, counts = [], []
    for name, img in photographs().items():
        for s in scales:
            im = block_mean(img, s)
            ph, pw = im.shape[0] // size, im.shape[1] // size
            if ph == 0 or pw == 0:
                continue
            p = im[: ph * size, : pw * size].reshape(ph, size, pw, size).transpose(0, 2, 1, 3).reshape(-1, size * size)
            rows.append(2.0 * p - 1.0)
            counts.append({"image": name, "scale": s, "patches": int(p.shape[0])})
    return np.concatenate(rows), counts


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> np.ndarray:
    """Hard assignments of k-means (k-means++ seeding, ``iters`` Lloyd steps)."""
    sq = (x * x).sum(1)
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        c = x[rng.choice(len(x), p=d2 / d2.sum())]
        centers.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    c = np.stack(centers)
    for _ in range(iters):
        assign = np.argmin(sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], axis=1)
        for j in range(k):
            if (assign == j).any():
                c[j] = x[assign == j].mean(0)
    return np.argmin(sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], axis=1)


def _m_step(x: np.ndarray, resp: np.ndarray, rank: int, floor_min: float) -> dict[str, np.ndarray]:
    n, d = x.shape
    k = resp.shape[1]
    nk = resp.sum(0)
    means = np.zeros((k, d))
    factors = np.zeros((k, d, rank))
    floor = np.zeros(k)
    for j in range(k):
        sel = resp[:, j] > 1e-10 * resp[:, j].max()  # responsibilities are sparse
        r, xs = resp[sel, j], x[sel]
        means[j] = r @ xs / nk[j]
        y = (xs - means[j]) * np.sqrt(r / nk[j])[:, None]
        lam, u = np.linalg.eigh(y.T @ y)
        lam, u = lam[::-1], u[:, ::-1]
        u = u * np.sign(u[np.abs(u).argmax(0), np.arange(d)])  # fix each eigenvector's sign
        floor[j] = max(float(lam[rank:].mean()), floor_min)
        factors[j] = u[:, :rank] * np.sqrt(np.clip(lam[:rank] - floor[j], 0.0, None))
    return {"weights": nk / n, "means": means, "factors": factors, "floor": floor}


def _loglik(x: np.ndarray, p: dict[str, np.ndarray], chunk: int = 2048) -> tuple[np.ndarray, float]:
    """Responsibilities ``[N, K]`` and the mean log-likelihood, via :class:`LowRankMixture` (Woodbury)."""
    from ..models.lowrank import LowRankMixture

    m = LowRankMixture(torch.from_numpy(p["weights"]), torch.from_numpy(p["means"]), torch.from_numpy(p["factors"]),
                       torch.from_numpy(p["floor"]))
    resp, ll = [], 0.0
    for i in range(0, len(x), chunk):
        logits = m._terms(torch.from_numpy(x[i:i + chunk]), 0.0, None)[0]
        lse = torch.logsumexp(logits, 1)
        resp.append(torch.exp(logits - lse[:, None]).numpy())
        ll += float(lse.sum())
    return np.concatenate(resp), ll / len(x)


def fit_lowrank_mixture(x: np.ndarray, k: int, rank: int, *, iters: int = 30, seed: int = 0, floor_min: float = 1e-4,
                        kmeans_iters: int = 10, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """EM for a K-component rank-``rank``-plus-isotropic mixture on ``x [N, d]`` (float64, deterministic).

    Returns the parameters (``weights``, ``means``, ``factors``, ``floor``) and a log (log-likelihood
    per iteration, seconds)."""
    t0 = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float64)
    assign = _kmeans_pp(x, k, np.random.default_rng(seed), kmeans_iters)
    resp = np.zeros((len(x), k))
    resp[np.arange(len(x)), assign] = 1.0
    history = []
    for _ in tqdm(range(iters), disable=not progress, desc=f"EM K={k} r={rank} d={x.shape[1]}"):
        params = _m_step(x, resp, rank, floor_min)
        resp, ll = _loglik(x, params)
        history.append(ll)
    params = _m_step(x, resp, rank, floor_min)
    _, ll = _loglik(x, params)
    history.append(ll)
    return params, {"loglik_per_patch": history, "seconds": time.perf_counter() - t0, "iters": iters, "seed": seed,
                    "floor_min": floor_min, "nats_per_dim": history[-1] / x.shape[1]}
