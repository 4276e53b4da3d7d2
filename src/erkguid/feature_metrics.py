"""Distribution metrics in a feature space: FD, KID, k-NN precision/recall, Inception-Score analogue.

These are the paper's metrics (App. B.2: FD-DINOv2, FID, precision/recall, IS) computed on feature
arrays ``[N, D]``. Feature spaces we ship: raw coordinates (2-D tree) and the penultimate layer /
class probabilities of a small digits classifier (``digits-classifier``). Standard FID or
FD-DINOv2 features come from a TorchScript extractor file the user supplies
(:func:`load_feature_extractor`); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _arr(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a feature array [N, D] with N >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN/Inf")
    return a


def _pair(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fa, fb = _arr(a, "a"), _arr(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"a and b must have the same feature dimension, got {fa.shape[1]} and {fb.shape[1]}")
    return fa, fb


def _stats(f: np.ndarray) -> tuple[Tensor, Tensor]:
    t = torch.from_numpy(f)
    return t.mean(0), torch.atleast_2d(torch.cov(t.T))


def frechet_from_stats(mu_a: Tensor, s_a: Tensor, mu_b: Tensor, s_b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) from float64 means and covariances.

    (Linear algebra runs in torch: numpy's threaded BLAS is ~20x slower for 64x64 on shared cores.)"""
    ev, vec = torch.linalg.eigh(s_a)
    root_a = (vec * ev.clamp_min(0).sqrt()) @ vec.T
    m = root_a @ s_b @ root_a
    cross = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + s_a.trace() + s_b.trace() - 2 * cross)


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID's formula, Heusel et al. 2017):
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)."""
    fa, fb = _pair(a, b)
    return frechet_from_stats(*_stats(fa), *_stats(fb))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    d = x.shape[1]
    kxx = (tx @ tx.T / d + 1) ** 3
    kyy = (ty @ ty.T / d + 1) ** 3
    kxy = (tx @ ty.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (n * (n - 1)) - 2 * kxy.mean())


def kid(a: Tensor | np.ndarray, b: Tensor | np.ndarray, num_subsets: int = 50, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial
    kernel (x.y/D + 1)^3, mean and std over random subsets. With ``subset_size >= min(N_a, N_b)``
    the full sets are used once (std 0)."""
    fa, fb = _pair(a, b)
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(f"num_subsets must be >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}")
    if subset_size >= min(len(fa), len(fb)):
        return _mmd2_unbiased(fa, fb), 0.0
    rng = np.random.default_rng(seed)
    vals = [
        _mmd2_unbiased(fa[rng.choice(len(fa), subset_size, replace=False)], fb[rng.choice(len(fb), subset_size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    t = torch.from_numpy(x)
    out = []
    for i in range(0, len(x), 2048):
        d = torch.cdist(t[i : i + 2048], t)
        out.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(out).numpy()


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> np.ndarray:
    c = torch.from_numpy(centres)
    r = torch.from_numpy(radii)
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(torch.from_numpy(points[i : i + chunk]), c)
        out.append((d <= r[None, :]).any(1).numpy())
    return np.concatenate(out)


def precision_recall(real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the manifold of a set is the union of
    balls around its points with radius the distance to the k-th nearest neighbour; precision is
    the fraction of ``fake`` inside the real manifold, recall the fraction of ``real`` inside the fake one."""
    fr, ff = _pair(real, fake)
    return FeatureReference(fr, k=k).precision_recall(ff)


class FeatureReference:
    """Reference features with their statistics precomputed (mean, covariance, k-NN radii), for
    evaluating many sample sets against the same data (FD, KID, precision/recall)."""

    def __init__(self, feats: Tensor | np.ndarray, k: int = 3) -> None:
        self.feats = _arr(feats, "feats")
        if not 1 <= k < len(self.feats):
            raise ValueError(f"k must be in [1, min(N) - 1], got {k}")
        self.k = k
        self.mu, self.cov = _stats(self.feats)
        self.radii = _kth_radius(self.feats, k)

    def fd(self, fake: Tensor | np.ndarray) -> float:
        f = _arr(fake, "fake")
        return frechet_from_stats(*_stats(f), self.mu, self.cov)

    def precision_recall(self, fake: Tensor | np.ndarray) -> tuple[float, float]:
        ff = _arr(fake, "fake")
        if ff.shape[1] != self.feats.shape[1]:
            raise ValueError(f"fake must have feature dimension {self.feats.shape[1]}, got {ff.shape[1]}")
        if not self.k < len(ff):
            raise ValueError(f"k must be in [1, min(N) - 1], got {self.k}")
        precision = _coverage(ff, self.feats, self.radii).mean()
        recall = _coverage(self.feats, ff, _kth_radius(ff, self.k)).mean()
        return float(precision), float(recall)


def inception_score(probs: Tensor | np.ndarray, splits: int = 1) -> float:
    """Inception Score analogue exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) from class
    probabilities ``[N, C]``; averaged over ``splits`` equal parts like the original."""
    p = _arr(probs, "probs")
    if (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-5):
        raise ValueError("probs must be non-negative rows summing to 1")
    if splits < 1 or splits > len(p):
        raise ValueError(f"splits must be in [1, N], got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        marg = part.mean(0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(marg, 1e-30, None)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


class DigitsFeatures:
    """Features (64-D penultimate layer) and class probabilities of the shipped ``digits-classifier``."""

    def __init__(self) -> None:
        from .learned import load_learned

        self.net = load_learned("digits-classifier")

    @torch.no_grad()
    def __call__(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = x.reshape(x.shape[0], -1).float()
        f = self.net.features(x)
        return f.double().numpy(), torch.softmax(self.net.head(f), 1).double().numpy()


def feature_report(samples: Tensor, reference: Tensor, space: str = "raw", k: int = 3,
                   kid_subset: int = 1000) -> dict[str, float]:
    """FD, KID (x1e3), precision, recall (and IS + accuracy-free class entropy for ``digits``) of
    ``samples`` against ``reference`` in feature ``space``: ``raw`` coordinates or ``digits``."""
    fs: Tensor | np.ndarray
    fr: Tensor | np.ndarray
    if space == "raw":
        fs, fr = samples.reshape(samples.shape[0], -1), reference.reshape(reference.shape[0], -1)
        probs = None
    elif space == "digits":
        ext = DigitsFeatures()
        fs, probs = ext(samples)
        fr, _ = ext(reference)
    else:
        raise ValueError(f"space must be 'raw' or 'digits', got {space!r}")
    prec, rec = precision_recall(fr, fs, k=k)
    out = {"fd": frechet_distance(fs, fr), "kid_x1e3": 1e3 * kid(fs, fr, subset_size=kid_subset)[0],
           "precision": prec, "recall": rec}
    if probs is not None:
        out["is"] = inception_score(probs)
    return out


# --------------------------------------------------------------------- user-supplied extractors
def load_feature_extractor(path: str | Path) -> Any:
    """Load a user-exported feature extractor (e.g. Inception-v3 pool3 for FID, DINOv2 ViT-L/14 for
    FD-DINOv2): a ``torch.export`` program (``.pt2``, ``torch.export.save``) or a TorchScript file
    (any other suffix, ``torch.jit.save``). Contract: input images ``[B, C, H, W]`` float in [-1, 1],
    output ``[B, D]`` features; resizing and normalisation belong inside the exported module."""
    import warnings

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"feature extractor file not found: {p} (export one with torch.export.save or torch.jit.save)")
    if p.suffix == ".pt2":
        return torch.export.load(str(p)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(p), map_location="cpu").eval()


@torch.no_grad()
def extract_features(extractor: Any, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """Run ``extractor`` over ``images`` in batches; checks the ``[B, D]`` output contract."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    outs = []
    for i in range(0, images.shape[0], batch_size):
        part = images[i : i + batch_size].float()
        f = extractor(part)
        if not isinstance(f, Tensor) or f.ndim != 2 or f.shape[0] != part.shape[0]:
            got = tuple(f.shape) if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"feature extractor must return [B, D] for a batch of {part.shape[0]}, got {got}")
        outs.append(f.double().cpu().numpy())
    return np.concatenate(outs)


def fd_with_extractor(path: str | Path, images_a: Tensor, images_b: Tensor, batch_size: int = 64) -> float:
    """FID / FD-DINOv2: :func:`frechet_distance` on the features of a user-supplied extractor file."""
    ext = load_feature_extractor(path)
    return frechet_distance(extract_features(ext, images_a, batch_size), extract_features(ext, images_b, batch_size))
