"""LMS: k-diffusion's ``sample_lms`` (linear multistep in sigma), i.e. DEIS-rhoAB of order 4.

``sample_lms`` integrates the Lagrange basis through the last k drifts in sigma with scipy's
``quad`` at every step; the integrand is a polynomial, so :func:`.deis.lagrange_integrals` gives the
same coefficients in closed form (no scipy, nothing computed at import). The step is DEIS's with
``mode="rhoab"`` (one concept, one place), k = min(order, i + 1), the step to 0 included. Declared
order 3: what order 4 measures over N = 16-128 on the Gaussian test (the Euler start caps the
asymptotic order at 2; see tests/test_solvers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Solver, StepContext, StepOut, register
from .deis import check_order, deis_coefficients, deis_step
from .multistep import History


def _lms_setup(sigmas: Tensor, options: Mapping[str, Any]) -> list[list[float]]:
    """Validate ``order`` and compute every step's rhoAB coefficients once per run."""
    check_order("lms", options["order"], (1, 2, 3, 4))
    return [[float(c) for c in cs] for cs in deis_coefficients(sigmas, options["order"], "rhoab")]


def lms_step(ctx: StepContext, i: int, x: Tensor, carry: History | None = None, *, order: int = 4) -> StepOut:
    """One LMS step (k-diffusion ``sample_lms(order=order)``).

    Embedded pair: DEIS's (Table 9), ``(x_i, f_i)`` vs ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``, sign -1.
    """
    return deis_step(ctx, i, x, carry, order=order, mode="rhoab")


LMS = register(
    Solver(
        "lms", lms_step, order=3, nfe=lambda n, options, to_zero: n, setup=_lms_setup,
        doc="LMS (k-diffusion sample_lms; DEIS rhoAB), orders 1-4; pair: previous evaluated point, sign -1",
    )
)
