"""Sample-quality and accuracy metrics on raw coordinates (exact-model evaluations)."""

from __future__ import annotations

from collections.abc import Callable

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


def bootstrap_ci(
    values: Tensor | np.ndarray,
    stat: Callable[[np.ndarray], float] = np.mean,
    num: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the first axis of ``values``."""
    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(num, len(v)))
    boots = np.array([stat(v[i]) for i in idx])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def ratio_ci(
    err: Tensor, err_base: Tensor, num: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Ratio of mean errors (method / baseline) with a paired bootstrap interval (same noise)."""
    e = np.asarray(err.detach().cpu(), dtype=np.float64)
    eb = np.asarray(err_base.detach().cpu(), dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(num, len(e)))
    boots = e[idx].mean(1) / eb[idx].mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return float(e.mean() / eb.mean()), float(lo), float(hi)
