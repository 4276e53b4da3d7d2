"""DPM-Solver++(2M) (Lu et al. 2022b) with k-diffusion's ``sample_dpmpp_2m`` semantics.

In t = -log sigma with h = t_{i+1} - t_i: ``x_{i+1} = (sigma_{i+1}/sigma_i) x_i - expm1(-h) D'``, where
``D' = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}``, ``r = h_{i-1}/h``; the first step and the step to
sigma = 0 use ``D' = D_i`` (the latter lands exactly on ``D_i``: no division by zero).
"""

from __future__ import annotations

import math

from torch import Tensor

from .base import Solver, StepContext, StepOut, register
from .multistep import History, denoised_history_pair, push


def dpmpp_2m_step(ctx: StepContext, i: int, x: Tensor, carry: History | None = None) -> StepOut:
    """One DPM-Solver++(2M) step.

    Embedded pair (our choice; the paper does not cover this solver): the multistep pair of
    DEIS in Table 9, ``(x_i, f_i)`` vs ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``,
    beta in {0, -1}. 2M is a two-step method whose only stored information is the previous
    evaluated point, exactly like DEIS, so that point is the embedded partner (see
    :mod:`.multistep` for why both members must be evaluated points and why the sign is -1).
    """
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    denoised = ctx.denoise(x, sigma)
    pair, f = denoised_history_pair(ctx, i, x, denoised, carry)
    if sigma_next == 0:
        return StepOut(denoised, denoised, None, pair)
    h = math.log(sigma) - math.log(sigma_next)
    if carry is None:
        d = denoised
    else:
        h_last = math.log(ctx.sigma(i - 1)) - math.log(sigma)
        r = h_last / h
        d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * carry.denoised[0]
    x_next = (sigma_next / sigma) * x - math.expm1(-h) * d
    return StepOut(x_next, denoised, push(carry, x if ctx.want_pair else None, None, 1, denoised), pair)


DPMPP_2M = register(
    Solver(
        "dpmpp_2m", dpmpp_2m_step, order=2, nfe=lambda n, options, to_zero: n,
        doc="DPM-Solver++(2M) (k-diffusion sample_dpmpp_2m); pair: previous evaluated point, sign -1",
    )
)
