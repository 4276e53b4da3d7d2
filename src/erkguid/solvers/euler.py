"""Euler's method (Eq. 3): first order, one evaluation per step, no embedded pair."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Solver, StepContext, StepOut, register, to_d


def euler_step(ctx: StepContext, i: int, x: Tensor, carry: Any = None) -> StepOut:
    """x_{i+1} = x_i - h f(x_i; sigma_i), h = sigma_i - sigma_{i+1} (Eq. 3)."""
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    denoised = ctx.denoise(x, sigma)
    return StepOut(x + (sigma_next - sigma) * to_d(x, sigma, denoised), denoised, None)


EULER = register(Solver("euler", euler_step, order=1, nfe=lambda n, options, to_zero: n, doc="Euler (Eq. 3)"))
