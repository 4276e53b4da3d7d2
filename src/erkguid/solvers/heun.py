"""Heun's method, EDM Algorithm 1, with its embedded Euler solution as the ERK pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..correction import ErkPair
from .base import Solver, StepContext, StepOut, register, to_d


class HeunCarry:
    """The buffered Euler point of the previous step and its drift (Alg. 1, line 20).

    Mutable on purpose: with ``ctx.reduce_pair`` the next step folds the pair at once and empties
    the carry, which frees the partner although the caller still holds the carry object.
    """

    __slots__ = ("x_euler", "f_euler")

    def __init__(self, x_euler: Tensor | None, f_euler: Tensor | None) -> None:
        self.x_euler, self.f_euler = x_euler, f_euler


def heun_step(ctx: StepContext, i: int, x: Tensor, carry: HeunCarry | None = None) -> StepOut:
    """One Heun step (Eq. 5); the step to sigma = 0 is a plain Euler step (EDM Alg. 1).

    Embedded pair (Table 9, Alg. 1 lines 7-9): the current state ``x_i`` with ``f_i`` against
    the previous step's Euler point ``x_i^Euler`` with ``f_i^Euler``, ``h = sigma_i - sigma_{i+1}``,
    beta in {0, 1}. There is no pair at the first step.
    """
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    denoised = ctx.denoise(x, sigma)
    f = to_d(x, sigma, denoised)
    h = sigma - sigma_next
    pair = None
    if carry is not None and carry.x_euler is not None and carry.f_euler is not None:
        if ctx.reduce_pair:
            pair = ErkPair.reduce(x, f, carry.x_euler, carry.f_euler, h, consume=True)  # the carry is emptied below
            carry.x_euler = carry.f_euler = None  # release the partner now
        else:
            pair = ErkPair(x, f, carry.x_euler, carry.f_euler, h)
    x_euler = x - h * f  # Alg. 1, line 15
    if sigma_next == 0:  # final step: Euler (Alg. 1, line 22)
        return StepOut(x_euler, denoised, None, pair)
    f_euler = to_d(x_euler, sigma_next, ctx.denoise(x_euler, sigma_next))  # line 17
    x_heun = x - (f + f_euler).mul_(0.5 * h)  # line 18: x - h (f + f_euler) / 2, in 3 passes
    return StepOut(x_heun, denoised, HeunCarry(x_euler, f_euler) if ctx.want_pair else None, pair)


def _heun_nfe(n: int, options: Mapping[str, Any], to_zero: bool) -> int:
    return 2 * n - 1 if to_zero else 2 * n  # the step onto sigma = 0 is one Euler evaluation


HEUN = register(
    Solver("heun", heun_step, order=2, nfe=_heun_nfe, doc="Heun / EDM Alg. 1 (Eq. 5); pair: previous Euler point")
)
