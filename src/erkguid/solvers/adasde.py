"""AdaSDE (Wang et al., NeurIPS 2025): a DPM-Solver-2 step with learned per-step coefficients
and a learned noise inflation (EDM "churn").

Step i from ``x_i`` at ``sigma_i`` with coefficients ``(r_i, c_i, a_i, gamma_i)``
(official code, ``solvers.py``; see docs/adasde.md):

    sigma_hat = (1 + gamma_i) sigma_i,   x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) z_i
    d_i      = (x_hat - D(x_hat; sigma_hat)) / sigma_hat       (AFS at i = 0: x_hat / sqrt(1 + sigma_hat^2))
    s_i      = sigma_{i+1}^r_i sigma_hat^(1 - r_i)              (fraction r_i of the way in log sigma)
    x_mid    = x_hat + (s_i - sigma_hat) d_i
    d_mid    = (x_mid - D(x_mid; a_i s_i)) / s_i                 (a_i scales only the network's sigma)
    x_{i+1}  = x_hat + c_i (sigma_{i+1} - sigma_hat) d_mid

With gamma = 0, r = 1/2, a = c = 1 this is DPM-Solver-2 (the midpoint rule in log sigma).
The grid holds the positive levels the coefficients were distilled for, then 0; the step from
``sigma_min`` to 0 returns the state unchanged (official ``denoise_to_zero=False``) or, with
``denoise_to_zero=True``, ``D(x; sigma_min)`` at one extra evaluation.

ERK-Guid on AdaSDE (ours, not in either paper): the embedded pair is DPM-Solver-2's
(Table 9): ``(x_hat, d_i)`` against the intermediate point ``(x_mid, d_mid)``,
``h = sigma_hat - sigma_{i+1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..correction import ErkPair
from .adasde_coeffs import AdaSDECoefficients
from .base import Solver, StepContext, StepOut, register

Scalar = float | Tensor
DenoiseFn = Callable[[Tensor, Any], Tensor]  # sigma: a float (the engine's denoise) or a 0-d tensor (training)


class AdaSDEParts(NamedTuple):
    """Everything one AdaSDE update computed (for the ERK pair, callbacks and training)."""

    x_next: Tensor
    x_hat: Tensor
    sigma_hat: Scalar
    d: Tensor
    x_mid: Tensor
    d_mid: Tensor
    denoised: Tensor | None  # D(x_hat; sigma_hat); None for the analytic first step
    nfe: int


def adasde_update(
    denoise: DenoiseFn,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    r: Scalar = 0.5,
    c: Scalar = 1.0,
    a: Scalar = 1.0,
    gamma: Scalar = 0.0,
    z: Tensor | None = None,
    afs: bool = False,
) -> AdaSDEParts:
    """One AdaSDE step (the six formulas of the module docstring), differentiable in r, c, a, gamma.

    ``denoise(x, sigma)`` takes a float or a 0-d tensor sigma. ``z`` is the standard-normal
    inflation noise, required when ``gamma`` may be non-zero. ``sigma_next`` must be > 0.
    """
    if not sigma > sigma_next > 0:
        raise ValueError(f"adasde_update needs sigma > sigma_next > 0, got sigma={sigma}, sigma_next={sigma_next}")
    if isinstance(gamma, Tensor) or gamma != 0:
        if z is None:
            raise ValueError("z (the inflation noise) is required when gamma may be non-zero")
        sigma_hat = (1 + gamma) * sigma
        root = torch.sqrt(gamma * (2 + gamma)) if isinstance(gamma, Tensor) else math.sqrt(gamma * (2 + gamma))
        x_hat = x + sigma * root * z  # sqrt(sigma_hat^2 - sigma^2) z
    else:
        sigma_hat, x_hat = sigma, x
    if afs:
        denoised, nfe = None, 1
        d = x_hat / (torch.sqrt(1 + sigma_hat**2) if isinstance(sigma_hat, Tensor) else math.sqrt(1 + sigma_hat**2))
    else:
        denoised, nfe = denoise(x_hat, sigma_hat), 2
        d = (x_hat - denoised) / sigma_hat
    s: Scalar
    if isinstance(r, Tensor) or isinstance(sigma_hat, Tensor):
        s = torch.exp(r * math.log(sigma_next) + (1 - r) * torch.log(torch.as_tensor(sigma_hat, dtype=torch.float64)))
    else:
        s = math.exp(r * math.log(sigma_next) + (1 - r) * math.log(sigma_hat))
    x_mid = x_hat + (s - sigma_hat) * d
    d_mid = (x_mid - denoise(x_mid, a * s)) / s
    x_next = x_hat + c * (sigma_next - sigma_hat) * d_mid
    return AdaSDEParts(x_next, x_hat, sigma_hat, d, x_mid, d_mid, denoised, nfe)


def _resolve(coefficients: Any, grid: Tensor) -> Any:
    if coefficients is None:
        return AdaSDECoefficients.neutral(grid[:-1].tolist(), gamma_max=0.0, afs=False)
    if isinstance(coefficients, (str, Path)):
        coefficients = AdaSDECoefficients.load(coefficients)
    if not isinstance(coefficients, AdaSDECoefficients):
        kind = type(coefficients).__name__
        raise ValueError(f"solver_options['coefficients'] must be an AdaSDECoefficients, a path or None, got {kind}")
    coefficients.check_grid(grid)
    return coefficients


class AdaSDEPlan(NamedTuple):
    """The run's coefficients and their per-step values ``(r, c, a, gamma)`` as floats (read once per run)."""

    coefficients: AdaSDECoefficients
    values: list[tuple[float, float, float, float]]


def setup_adasde(sigmas: Tensor, options: Mapping[str, Any]) -> AdaSDEPlan:
    """Load and validate the coefficients once per run (the solver's setup hook); the step reads ``ctx.plan``.

    With ``differentiable=True`` the values are not read here: each step maps the raw tables itself."""
    coef = _resolve(options["coefficients"], sigmas)
    if options["differentiable"]:
        return AdaSDEPlan(coef, [])
    vals = [tuple(float(v) for v in coef.values(i)) for i in range(coef.num_steps)]
    return AdaSDEPlan(coef, vals)  # type: ignore[arg-type]


def adasde_step(
    ctx: StepContext,
    i: int,
    x: Tensor,
    carry: Any = None,
    *,
    coefficients: Any = None,
    denoise_to_zero: bool = False,
    differentiable: bool = False,
) -> StepOut:
    """One AdaSDE step with per-sample inflation noise from ``ctx.noise`` (see module docstring).

    ``coefficients`` (an :class:`AdaSDECoefficients`, a path, ``shipped:NAME`` or ``None`` for the
    neutral DPM-Solver-2 values) is resolved once per run into ``ctx.plan``. ``differentiable=True``
    (distillation) maps the raw tables at each step (:meth:`AdaSDECoefficients.values`, tensors): autograd
    reaches them through the state and the sigmas handed to the denoiser, and an optimiser may update them
    between steps (the next step reads the new values).
    """
    plan: AdaSDEPlan = ctx.plan
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    if sigma_next == 0:  # the final step: no update (official) or a final denoise
        if denoise_to_zero:
            den = ctx.denoise(x, sigma)
            return StepOut(den, den, None, None)
        return StepOut(x, x, None, None)
    r, c, a, gamma = plan.coefficients.values(i) if differentiable else plan.values[i]
    z = None
    if gamma > 0:
        if ctx.noise is None:
            raise ValueError("solver 'adasde' with gamma > 0 needs per-sample seeds: pass seeds=[...] to sample()")
        z = ctx.noise(x)
    parts = adasde_update(ctx.denoise, x, sigma, sigma_next, r, c, a, gamma, z, afs=plan.coefficients.afs and i == 0)
    sigma_hat = float(parts.sigma_hat.detach() if isinstance(parts.sigma_hat, Tensor) else parts.sigma_hat)
    pair = ErkPair(parts.x_hat, parts.d, parts.x_mid, parts.d_mid, sigma_hat - sigma_next)
    denoised = parts.denoised if parts.denoised is not None else parts.x_hat - sigma_hat * parts.d
    return StepOut(parts.x_next, denoised, None, pair)


def _afs(coefficients: Any) -> bool:
    """Whether the coefficients take the analytic first step (None: the neutral values, no AFS)."""
    if coefficients is None:
        return False
    if isinstance(coefficients, (str, Path)):
        coefficients = AdaSDECoefficients.load(coefficients)
    return bool(getattr(coefficients, "afs", False))


def _adasde_nfe(n: int, options: Mapping[str, Any], to_zero: bool) -> int:
    """2 per step onto a positive level, 1 less for the analytic first step (AFS); the step onto 0 is free
    (``denoise_to_zero=False``, official) or one evaluation."""
    if not to_zero:
        raise ValueError("AdaSDE grids are the coefficients' levels then 0 (coefficients.grid()); they cannot end above 0")
    first_free = int(_afs(options["coefficients"]) and n > 1)
    return 2 * (n - 1) - first_free + int(bool(options["denoise_to_zero"]))


ADASDE = register(
    Solver(
        "adasde",
        adasde_step,
        order=2,
        nfe=_adasde_nfe,
        doc="AdaSDE (NeurIPS 2025): DPM-2 + learned r/a/c/gamma; pair: DPM-2 midpoint",
        setup=setup_adasde,
    )
)
