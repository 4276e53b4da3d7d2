"""DPM-Solver-2 in k-diffusion's form: a midpoint step taken in log sigma (Lu et al. 2022).

The intermediate point is ``sigma_mid = exp((1 - r) log sigma_i + r log sigma_{i+1})``; ``r = 0.5``
reproduces k-diffusion's ``sample_dpm_2`` (``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) f_mid``). For
another ``r`` the two drifts are weighted ``(1 - 1/(2r), 1/(2r))`` (the second-order RK2 family).
The step to sigma = 0 is a plain Euler step (one evaluation), as in ``sample_dpm_2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..correction import ErkPair
from .base import Solver, StepContext, StepOut, register, to_d


def _dpm2_setup(sigmas: Tensor, options: Mapping[str, Any]) -> None:
    r = options["r"]
    if not (isinstance(r, (int, float)) and 0 < r <= 1):
        raise ValueError(f"solver option r must be in (0, 1], got {r!r}")


def dpm2_step(ctx: StepContext, i: int, x: Tensor, carry: Any = None, *, r: float = 0.5) -> StepOut:
    """One DPM-Solver-2 step.

    Embedded pair (Table 9, DPM-Solver (2S)): the step's start ``(x_i, f_i)`` against the
    intermediate point ``(x_mid, f_mid)``, ``h = sigma_i - sigma_{i+1}``, beta in {0, 1}; the
    correction (Eq. 63) projects ``f_i``. The final Euler step has no pair.
    """
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    denoised = ctx.denoise(x, sigma)
    d = to_d(x, sigma, denoised)
    dt = sigma_next - sigma
    if sigma_next == 0:
        return StepOut(x + d * dt, denoised, None)
    sigma_mid = math.exp(math.log(sigma) + r * (math.log(sigma_next) - math.log(sigma)))
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, ctx.denoise(x_mid, sigma_mid))
    if r == 0.5:
        x_next = x + d_mid * dt
    else:
        w = 1.0 / (2.0 * r)
        x_next = x + ((1.0 - w) * d + w * d_mid) * dt
    if ctx.reduce_pair:  # x_mid and d_mid are this step's own: the reduction reuses their buffers
        return StepOut(x_next, denoised, None, ErkPair.reduce(x, d, x_mid, d_mid, sigma - sigma_next, 1.0, consume=True))
    return StepOut(x_next, denoised, None, ErkPair(x, d, x_mid, d_mid, sigma - sigma_next, 1.0))


DPM2 = register(
    Solver(
        "dpm2", dpm2_step, order=2, nfe=lambda n, options, to_zero: 2 * n - 1 if to_zero else 2 * n, setup=_dpm2_setup,
        doc="DPM-Solver-2, midpoint in log sigma (k-diffusion sample_dpm_2); pair: intermediate point",
    )
)
