"""Predictor-corrector baseline (App. B.7): a Langevin corrector after each Heun step (Song et al. 2021b).

After the Heun step lands on sigma_{i+1} > 0 the score ``s = (D(x; sigma) - x) / sigma^2`` is
evaluated once more and ``x <- x + eps s + sqrt(2 eps) z`` with ``eps = 2 (r ||z|| / ||s||)^2`` per
sample (Song et al.'s Langevin corrector, signal-to-noise ratio ``r``). The deterministic variant
drops the noise term and uses ``||z|| -> sqrt(d)`` (the noise norm's typical value), as the paper
does for its ODE comparison. Noise comes from ``ctx.noise`` (per-sample seeds): pass ``seeds=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._batch import acc_dtype, append_dims, bnorm, bsafe_div
from .base import Solver, StepContext, StepOut, register
from .heun import HeunCarry, heun_step


def langevin_correct(ctx: StepContext, x: Tensor, sigma: float, r: float, stochastic: bool) -> Tensor:
    """One Langevin corrector step at noise level ``sigma`` (one evaluation)."""
    score = (ctx.denoise(x, sigma) - x) / sigma**2
    if stochastic:
        if ctx.noise is None:
            raise ValueError("solver heun_pc with stochastic=True needs per-sample seeds: pass seeds= to sample()")
        z = ctx.noise(x)
        znorm = bnorm(z)
    else:
        z = None
        znorm = _typical_noise_norm(x)
    eps = 2 * bsafe_div(r * znorm, bnorm(score)) ** 2  # [B]
    out = x + append_dims(eps, x.ndim).to(x.dtype) * score
    if z is not None:
        out = out + append_dims(eps.sqrt() * math.sqrt(2.0), x.ndim).to(x.dtype) * z
    return out


def _typical_noise_norm(x: Tensor) -> Tensor:
    """sqrt(d) per sample: the norm a standard normal draw of x's shape typically has."""
    return torch.full((x.shape[0],), math.sqrt(x[0].numel()), dtype=acc_dtype(x.dtype), device=x.device)


def heun_pc_step(
    ctx: StepContext, i: int, x: Tensor, carry: HeunCarry | None = None, *, r: float = 0.05, stochastic: bool = True
) -> StepOut:
    """A Heun step (Eq. 5, with its Table 9 pair) followed by a Langevin corrector at sigma_{i+1} > 0."""
    out = heun_step(ctx, i, x, carry)
    sigma_next = ctx.sigma(i + 1)
    if sigma_next == 0:
        return out
    return out._replace(x=langevin_correct(ctx, out.x, sigma_next, r, stochastic))


def _pc_setup(sigmas: Tensor, options: Mapping[str, Any]) -> None:
    r = options["r"]
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r >= 0):
        raise ValueError(f"solver option r must be a finite number >= 0, got {r!r}")


def _pc_nfe(n: int, options: Mapping[str, Any], to_zero: bool) -> int:
    return 3 * n - 2 if to_zero else 3 * n  # Heun (2) + corrector (1) per step; the step onto 0 is one Euler evaluation


HEUN_PC = register(
    Solver(
        "heun_pc", heun_pc_step, order=2, nfe=_pc_nfe, setup=_pc_setup,
        doc="Heun + Langevin corrector (App. B.7 baseline; stochastic needs seeds); pair: Heun's",
    )
)
