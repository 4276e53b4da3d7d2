"""Sample-quality and accuracy metrics on raw coordinates (exact-model evaluations)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ._batch import bnorm


def global_error(x: Tensor, x_ref: Tensor) -> Tensor:
    """Per-sample Euclidean distance to the reference ODE solution from the same noise, ``[B]``."""
    if x.shape != x_ref.shape:
        raise ValueError(f"x and x_ref must have the same shape, got {tuple(x.shape)} and {tuple(x_ref.shape)}")
    return bnorm(x.to(torch.float64) - x_ref.to(torch.float64))


def sliced_wasserstein(a: Tensor, b: Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (equal sizes by truncation)."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    n = min(a.shape[0], b.shape[0])
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(a.shape[1], num_projections, generator=g, dtype=torch.float64)
    proj = proj / proj.norm(dim=0, keepdim=True)
    pa = (a[:n] @ proj).sort(dim=0).values
    pb = (b[:n] @ proj).sort(dim=0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def energy_distance(a: Tensor, b: Tensor, max_points: int = 4096) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo), V-statistic form."""
    a = a.reshape(a.shape[0], -1).double()[:max_points]
    b = b.reshape(b.shape[0], -1).double()[:max_points]
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


# ------------------------------------------------------------------------------------------ intervals
# The one place for intervals. Over many paired samples (same noise/seed per sample): percentile bootstrap with
# paired resampling (`paired_bootstrap`, `ratio_ci`, `bootstrap_ci`). Over a handful of independent runs (e.g. 5
# distillation seeds): a t-interval of the mean paired difference (`paired_t`).
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def paired_bootstrap(stat: Callable[[np.ndarray], np.ndarray | float], n: int, num: int = 1000, level: float = 0.95,
                     seed: int = 0, vectorized: bool = False) -> tuple[float, float]:
    """Percentile interval of ``stat(idx)`` over ``num`` resamples ``idx`` of ``range(n)`` with replacement; the same
    ``idx`` indexes every paired quantity. ``vectorized``: ``stat`` takes all resamples ``[num, n]`` at once."""
    if n < 1:
        raise ValueError("paired_bootstrap needs at least one sample")
    idx = np.random.default_rng(seed).integers(0, n, size=(num, n))
    boots = np.asarray(stat(idx)) if vectorized else np.array([stat(i) for i in idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _np(v: Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=np.float64)


def bootstrap_ci(
    values: Tensor | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    num: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the first axis of ``values``."""
    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
    return paired_bootstrap(lambda i: stat(v[i]), len(v), num, level, seed)


def ratio_ci(
    err: Tensor, err_base: Tensor, num: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Ratio of mean errors (method / baseline) with a paired bootstrap interval (same noise)."""
    e, eb = _np(err), _np(err_base)
    lo, hi = paired_bootstrap(lambda i: e[i].mean(1) / eb[i].mean(1), len(e), num, level, seed, vectorized=True)
    return float(e.mean() / eb.mean()), lo, hi


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean paired difference a - b over a few independent runs with a 95 % t-interval and the count of a < b."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    half = T975.get(n, 1.96) * sd / math.sqrt(n) if n > 1 else float("nan")
    mu = float(d.mean())
    return {"mean": mu, "lo": mu - half, "hi": mu + half, "a_lower": int((d < 0).sum()), "n": n}
