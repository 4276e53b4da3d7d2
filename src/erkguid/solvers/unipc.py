"""UniPC (Zhao et al. 2023), order 2, data prediction, B(h) = expm1(-h) ('bh2'), in t = -log sigma.

Per interval a -> b (h = log sigma_a - log sigma_b), with m = D(x; sigma):
UniP-2 predictor ``x_b^p = (sigma_b/sigma_a) x_a - expm1(-h) m_a - B(h) rho_p D1`` with
``D1 = (m_{a-1} - m_a)/r``, ``r = (log sigma_a - log sigma_{a-1})/h``, ``rho_p = 1/2``; UniC corrector
``x_b^c = (sigma_b/sigma_a) x_a - expm1(-h) m_a - B(h) (rho_c1 D1 + rho_c2 (m_b - m_a))`` with
``rho_c`` solving ``[[1, 1], [r, 1]] rho = b(h)``. The first interval is order 1 (``rho_c = 1/2``).
``m_b`` is evaluated at the predictor and reused for the next interval, so each step costs one
evaluation. The step to sigma = 0 lands on ``m_i`` (first order, no corrector), as UniPC's
``lower_order_final`` does. UniC raises the predictor's order by one (Zhao et al. 2023, Thm 3.1),
so the declared (and measured) convergence order of UniPC-2 is 3.

Mapping onto the step contract: step ``i`` evaluates ``m_i`` at the incoming predictor ``x_i^p``,
applies the corrector of the previous interval, then predicts ``x_{i+1}^p``. UniC and UniP share
their base term, so the corrector is an increment on the predictor that depends only on the
model outputs, ``x_i^c = x_i^p + B(h) ((1/2 - rho_c1) D1 - rho_c2 (m_i - m_{i-1}))``: the step advances
from the state it is given (whatever the engine did to it, e.g. the ERK-Guid correction) and
never rebuilds it from its carry.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

from ..correction import ErkPair
from .base import Solver, StepContext, StepOut, register, to_d


class UniPCCarry(NamedTuple):
    x_eval: Tensor  # x_{i-1}^p: where m_{i-1} was evaluated
    f_eval: Tensor  # drift there
    m: tuple[Tensor, ...]  # (m_{i-1}, m_{i-2}) newest first


def _b_coefficients(h: float) -> tuple[float, float, float]:
    """(B(h), b_1, b_2) of UniPC's bh2 variant for data prediction (hh = -h)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0
    b1 = h_phi_k / b_h
    h_phi_k = h_phi_k / hh - 0.5
    b2 = h_phi_k * 2.0 / b_h
    return b_h, b1, b2


def _predict(
    x_a: Tensor, sigma_a: float, sigma_b: float, m_a: Tensor, m_prev: Tensor | None, sigma_prev: float | None
) -> Tensor:
    """UniP-2 over the interval sigma_a -> sigma_b > 0 (order 1 on the first interval)."""
    h = math.log(sigma_a) - math.log(sigma_b)
    base = (sigma_b / sigma_a) * x_a - math.expm1(-h) * m_a
    if m_prev is None or sigma_prev is None:
        return base
    r = (math.log(sigma_a) - math.log(sigma_prev)) / h
    return base - math.expm1(-h) * 0.5 * ((m_prev - m_a) / r)


def _correct(
    sigma_a: float, sigma_b: float, m_a: Tensor, m_prev: Tensor | None, sigma_prev: float | None, m_b: Tensor
) -> Tensor:
    """UniC-2 minus UniP-2 over sigma_a -> sigma_b: the corrector's increment on the predictor."""
    h = math.log(sigma_a) - math.log(sigma_b)
    b_h, b1, b2 = _b_coefficients(h)
    if m_prev is None or sigma_prev is None:  # first interval: order 1, rho_c = 1/2
        return -b_h * 0.5 * (m_b - m_a)
    r = (math.log(sigma_a) - math.log(sigma_prev)) / h
    d1 = (m_prev - m_a) / r
    det = 1.0 - r  # solve [[1, 1], [r, 1]] rho = (b1, b2)
    rho1 = (b1 - b2) / det
    rho2 = (b2 - r * b1) / det
    return -b_h * ((rho1 - 0.5) * d1 + rho2 * (m_b - m_a))


def unipc_step(ctx: StepContext, i: int, x: Tensor, carry: UniPCCarry | None = None) -> StepOut:
    """One UniPC-2 step (corrector of the previous interval, then predictor of this one).

    Embedded pair (our choice; the paper does not cover UniPC): the multistep pair of DEIS in
    Table 9 taken at the evaluated predictor points, ``(x_i^p, f_i)`` vs ``(x_{i-1}^p, f_{i-1})``,
    ``h = sigma_{i-1} - sigma_i``, sign -1. The predictor/corrector pair at sigma_i is not used:
    both members share the single evaluation ``m_i``, so their drift difference is just
    ``(x^c - x^p)/sigma_i`` and carries no curvature information.
    """
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    m = ctx.denoise(x, sigma)
    f = to_d(x, sigma, m)
    pair = None
    x_c = x
    m_prev = sigma_prev = None
    if carry is not None:
        pair = ErkPair(x, f, carry.x_eval, carry.f_eval, ctx.sigma(i - 1) - sigma, -1.0)
        m_pp = carry.m[1] if len(carry.m) > 1 else None
        s_pp = ctx.sigma(i - 2) if m_pp is not None else None
        x_c = x + _correct(ctx.sigma(i - 1), sigma, carry.m[0], m_pp, s_pp, m)
        m_prev, sigma_prev = carry.m[0], ctx.sigma(i - 1)
    if sigma_next == 0:
        return StepOut(m, m, None, pair)
    x_next = _predict(x_c, sigma, sigma_next, m, m_prev, sigma_prev)
    ms = (m,) if carry is None else (m, carry.m[0])
    return StepOut(x_next, m, UniPCCarry(x, f, ms), pair)


UNIPC = register(
    Solver(
        "unipc", unipc_step, order=3, nfe=lambda n, options, to_zero: n,
        doc="UniPC-2 bh2, data prediction (UniP + UniC); pair: previous evaluated point, sign -1",
    )
)
