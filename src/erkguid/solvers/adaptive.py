"""Adaptive step size driven by the ERK stiffness estimate (App. B.6 baseline).

Heun over a base sigma grid, except that each sample halves its step while its stiffness
estimate exceeds ``tau``. Per sample and per base interval [sigma_i, sigma_{i+1}], the sample
sits at a dyadic position of the interval (in log sigma) and has a level k (step = interval / 2^k,
k reset to 0 at every base level). Before each Heun sub-step the sample evaluates f at its state
(the step's first evaluation) and computes rho (Eq. 17) from that and its buffered Euler point,
exactly as Heun's ERK pair does; if rho > tau and k < max_halvings the step is halved (k += 1)
before it is taken. rho is re-estimated after every sub-step, so the step keeps halving while
the sample stays stiff. Samples advance independently: each iteration evaluates the denoiser on
the still-active samples only, with their own per-sample sigma, so a sample's path and cost never
depend on its batch. The step to sigma = 0 is a plain Euler step, as in Heun. The NFE actually
spent is reported per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._batch import acc_dtype, append_dims, bnorm, bsafe_div, take_rows
from ..schedules import check_sigmas


@dataclass(frozen=True)
class AdaptiveResult:
    x: Tensor  # [B, *S] samples at sigma = 0
    nfe: Tensor  # [B] network evaluations spent per sample
    substeps: Tensor  # [B] Heun (sub)steps taken per sample (the final Euler step included)
    max_level: Tensor  # [B] deepest halving level reached


def adaptive_heun(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    tau: float,
    max_halvings: int = 4,
    progress: bool = False,
    **extra: Any,
) -> AdaptiveResult:
    """Heun with per-sample step halving while rho > ``tau`` (App. B.6); see the module docstring.

    Args:
        denoiser: ``D(x, sigma[B], **extra)``.
        x: initial states at ``sigmas[0]``.
        sigmas: base grid ending in 0.
        tau: stiffness threshold (> 0; ``inf`` gives plain Heun).
        max_halvings: at most ``2**max_halvings`` sub-steps per base interval.
        **extra: passed to the denoiser, sliced per active sample when it has a batch dimension.
    """
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"tau must be a number > 0, got {tau!r}")
    if int(max_halvings) != max_halvings or not 0 <= max_halvings <= 16:
        raise ValueError(f"max_halvings must be an integer in [0, 16], got {max_halvings!r}")
    grid = check_sigmas(sigmas)
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    sdt = acc_dtype(dt)
    full = 2**max_halvings
    x = x.clone()
    nfe = torch.zeros(b, dtype=torch.long, device=dev)
    substeps = torch.zeros(b, dtype=torch.long, device=dev)
    max_level = torch.zeros(b, dtype=torch.long, device=dev)
    x_e = torch.zeros_like(x)
    f_e = torch.zeros_like(x)
    has_pair = torch.zeros(b, dtype=torch.bool, device=dev)

    def den(idx: Tensor, xx: Tensor, s: Tensor) -> Tensor:
        out = denoiser(xx, s.to(sdt), **take_rows(extra, idx, b))
        nfe[idx] += 1
        return out.to(dt)

    n = grid.numel() - 1
    for i in tqdm(range(n), disable=not progress, desc=f"adaptive heun tau={tau:g}", leave=False):
        s_i, s_n = float(grid[i]), float(grid[i + 1])
        if s_n == 0:  # final Euler step, all samples
            idx = torch.arange(b, device=dev)
            d = (x - den(idx, x, torch.full((b,), s_i, dtype=torch.float64, device=dev))) / s_i
            x = x - s_i * d
            substeps += 1
            break

        def sigma_at(pos: Tensor, s_i: float = s_i, s_n: float = s_n) -> Tensor:
            frac = pos.to(torch.float64) / full
            val = torch.exp(math.log(s_i) + frac * (math.log(s_n) - math.log(s_i)))
            return torch.where(pos == 0, s_i, torch.where(pos == full, s_n, val))

        pos = torch.zeros(b, dtype=torch.long, device=dev)
        level = torch.zeros(b, dtype=torch.long, device=dev)
        while True:
            idx = (pos < full).nonzero().flatten()
            if idx.numel() == 0:
                break
            xa, sa = x[idx], sigma_at(pos[idx])
            f = (xa - den(idx, xa, sa)) / append_dims(sa, x.ndim).to(dt)
            rho = bsafe_div(bnorm(f - f_e[idx]), bnorm(xa - x_e[idx]))
            halve = has_pair[idx] & (rho > tau) & (level[idx] < max_halvings)
            level[idx] += halve.long()
            max_level[idx] = torch.maximum(max_level[idx], level[idx])
            new_pos = pos[idx] + full // 2 ** level[idx]
            sb = sigma_at(new_pos)
            h = append_dims(sa - sb, x.ndim).to(dt)
            xe = xa - h * f
            fe = (xe - den(idx, xe, sb)) / append_dims(sb, x.ndim).to(dt)
            x[idx] = xa - h * (0.5 * f + 0.5 * fe)
            x_e[idx], f_e[idx] = xe, fe
            has_pair[idx] = True
            pos[idx] = new_pos
            substeps[idx] += 1
    return AdaptiveResult(x, nfe, substeps, max_level)
