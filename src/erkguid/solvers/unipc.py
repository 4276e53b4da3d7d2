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
applies the corrector of the previous interval (giving ``x_i^c``), then predicts ``x_{i+1}^p``.
Whatever the loop added to the returned predictor (the ERK-Guid correction) is carried over to
``x_i^c`` as ``x_i^p - x_i^p,raw``, so the correction is not discarded by the corrector; with
``w_stiff = 0`` that difference is exactly zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import Tensor

from ..correction import ErkPair
from .base import Solver, StepContext, StepOut, register, to_d


class UniPCCarry(NamedTuple):
    x_start: Tensor  # x_{i-1}^c: the state the previous interval started from
    x_pred: Tensor  # x_i^p exactly as the previous step returned it (before any correction)
    x_eval: Tensor | None  # x_{i-1}^p: where m_{i-1} was evaluated (kept only when the pair is wanted)
    f_eval: Tensor | None  # drift there (likewise)
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


def _uni_update(
    x_a: Tensor, sigma_a: float, sigma_b: float, m_a: Tensor, m_prev: Tensor | None, sigma_prev: float | None,
    m_b: Tensor | None,
) -> Tensor:
    """UniP-2 (``m_b is None``) or UniC-2 (``m_b`` given) over the interval sigma_a -> sigma_b > 0."""
    h = math.log(sigma_a) - math.log(sigma_b)
    b_h, b1, b2 = _b_coefficients(h)
    base = (sigma_b / sigma_a) * x_a - math.expm1(-h) * m_a
    if m_prev is None:  # first interval: order 1
        return base if m_b is None else base - b_h * 0.5 * (m_b - m_a)
    r = (math.log(sigma_a) - math.log(sigma_prev)) / h
    d1 = (m_prev - m_a) / r
    if m_b is None:
        return base - b_h * 0.5 * d1
    det = 1.0 - r  # solve [[1, 1], [r, 1]] rho = (b1, b2)
    rho1 = (b1 - b2) / det
    rho2 = (b2 - r * b1) / det
    return base - b_h * (rho1 * d1 + rho2 * (m_b - m_a))


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
    f = to_d(x, sigma, m) if ctx.want_pair else None  # only the pair reads the drift
    pair = None
    x_c = x
    m_prev = sigma_prev = None
    if carry is not None:
        if f is not None and carry.x_eval is not None and carry.f_eval is not None:
            pair = ErkPair(x, f, carry.x_eval, carry.f_eval, ctx.sigma(i - 1) - sigma, -1.0)
        m_pp = carry.m[1] if len(carry.m) > 1 else None
        s_pp = ctx.sigma(i - 2) if m_pp is not None else None
        x_c = _uni_update(carry.x_start, ctx.sigma(i - 1), sigma, carry.m[0], m_pp, s_pp, m) + (x - carry.x_pred)
        m_prev, sigma_prev = carry.m[0], ctx.sigma(i - 1)
    if sigma_next == 0:
        return StepOut(m, m, None, pair)
    x_next = _uni_update(x_c, sigma, sigma_next, m, m_prev, sigma_prev, None)
    ms = (m,) if carry is None else (m, carry.m[0])
    return StepOut(x_next, m, UniPCCarry(x_c, x_next, x if f is not None else None, f, ms), pair)


UNIPC = register(
    Solver(
        "unipc", unipc_step, order=3, nfe=lambda n: n,
        doc="UniPC-2 bh2, data prediction (UniP + UniC); pair: previous evaluated point, sign -1",
    )
)
