"""UniPC (Zhao et al. 2023): UniP-p predictor + UniC corrector, data prediction, in lambda = -log sigma.

Per interval a -> b (h = log sigma_a - log sigma_b) with m = D(x; sigma), hh = -h, ``B(h) = hh``
('bh1') or ``expm1(hh)`` ('bh2'), the divided differences ``D1_k = (m_{a-k} - m_a)/r_k`` with
``r_k = (log sigma_a - log sigma_{a-k})/h`` and ``b_k = k! h phi_{k+1}(hh) / B(h)``:

* UniP-p: ``x_b = (sigma_b/sigma_a) x_a - expm1(-h) m_a - B(h) sum_k rho_k D1_k`` (k < p), rho = 1/2 for
  p = 2, else ``R[:-1, :-1] rho = b[:-1]`` with ``R_jk = r_k^j``;
* UniC-p: the same with ``m_b`` (evaluated at the predictor) appended as r_p = 1, ``R rho = b``
  (rho = 1/2 for p = 1). The corrector of an interval uses the order of its predictor.

The order of each interval is ``min(order, i + 1, N - i)`` (warm-up, and diffusers'
``lower_order_final``; N - i counts only when the grid ends at 0, so a split grid continues exactly),
so the step to sigma = 0 lands on ``m_i``. This is diffusers'
``UniPCMultistepScheduler(solver_order=order, solver_type=variant)`` with its defaults
(``predict_x0=True``, ``lower_order_final=True``, ``disable_corrector=[]``, ``final_sigmas_type="zero"``),
run on the same sigmas (tested). Each step costs one evaluation: ``m_b`` is reused by the next
predictor. UniC raises the predictor's order by one (Thm 3.1), but the state that reaches sigma_min
is an uncorrected predictor of order min(order, 2) + 1 (lower_order_final), so the measured order at
sigma_min is 3 for order 2 and 3 (tested).

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

import numpy as np
from torch import Tensor

from ..correction import ErkPair
from .base import Solver, StepContext, StepOut, register, to_d
from .deis import check_order

VARIANTS = ("bh1", "bh2")


class UniPCCarry(NamedTuple):
    x_eval: Tensor | None  # x_{i-1}^p: where m_{i-1} was evaluated (kept only when the pair is wanted)
    f_eval: Tensor | None  # drift there (likewise)
    m: tuple[Tensor, ...]  # (m_{i-1}, m_{i-2}, ...) newest first
    order: int  # order of the previous interval's predictor (its corrector uses it too)


def uni_rhos(rks: list[float], h: float, variant: str, corrector: bool) -> tuple[float, np.ndarray]:
    """``(B(h), rho)`` of UniP (``corrector=False``) or UniC for ratios ``rks`` (without the final 1)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    p = len(rks) + 1
    h_phi_k, fact, b = h_phi_1 / hh - 1, 1, []
    for k in range(1, p + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    r = np.array([*rks, 1.0])
    mat = np.stack([r**k for k in range(p)])
    if corrector:
        return b_h, np.array([0.5]) if p == 1 else np.linalg.solve(mat, np.array(b))
    if p <= 2:
        return b_h, np.array([0.5] * (p - 1))
    return b_h, np.linalg.solve(mat[:-1, :-1], np.array(b[:-1]))


def _residual(
    ctx: StepContext, a: int, ms: tuple[Tensor, ...], order: int, variant: str, m_b: Tensor | None
) -> tuple[float, Tensor | None]:
    """``(B(h), sum_k rho_k D1_k)`` of UniP-order (``m_b is None``) or UniC-order over sigma_a -> sigma_{a+1} > 0,
    ``ms = (m_a, m_{a-1}, ...)``; ``None`` for an order-1 predictor (no term)."""
    sigma_a, sigma_b = ctx.sigma(a), ctx.sigma(a + 1)
    h = math.log(sigma_a) - math.log(sigma_b)
    m_a = ms[0]
    rks = [(math.log(sigma_a) - math.log(ctx.sigma(a - k))) / h for k in range(1, order)]
    b_h, rho = uni_rhos(rks, h, variant, corrector=m_b is not None)
    res = None
    for k, rk in enumerate(rks, start=1):
        term = float(rho[k - 1]) * ((ms[k] - m_a) / rk)
        res = term if res is None else res + term
    if m_b is not None:
        term = float(rho[-1]) * (m_b - m_a)
        res = term if res is None else res + term
    return b_h, res


def unipc_step(
    ctx: StepContext, i: int, x: Tensor, carry: UniPCCarry | None = None, *, order: int = 2, variant: str = "bh2"
) -> StepOut:
    """One UniPC step (corrector of the previous interval, then predictor of this one).

    Embedded pair (our choice; the paper does not cover UniPC): the multistep pair of DEIS in
    Table 9 taken at the evaluated predictor points, ``(x_i^p, f_i)`` vs ``(x_{i-1}^p, f_{i-1})``,
    ``h = sigma_{i-1} - sigma_i``, sign -1. The predictor/corrector pair at sigma_i is not used:
    both members share the single evaluation ``m_i``, so their drift difference is just
    ``(x^c - x^p)/sigma_i`` and carries no curvature information.
    """
    check_order("unipc", order, (1, 2, 3))
    if variant not in VARIANTS:
        raise ValueError(f"solver option variant must be one of {VARIANTS} for unipc, got {variant!r}")
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    m = ctx.denoise(x, sigma)
    f = to_d(x, sigma, m) if ctx.want_pair else None  # only the pair reads the drift
    pair = None
    x_c = x
    if carry is not None:  # UniC - UniP of the previous interval: an increment on the state we were given
        if f is not None and carry.x_eval is not None and carry.f_eval is not None:
            pair = ErkPair(x, f, carry.x_eval, carry.f_eval, ctx.sigma(i - 1) - sigma, -1.0)
        b_h, res_c = _residual(ctx, i - 1, carry.m, carry.order, variant, m)
        _, res_p = _residual(ctx, i - 1, carry.m, carry.order, variant, None)
        assert res_c is not None
        x_c = x - b_h * (res_c if res_p is None else res_c - res_p)
    if sigma_next == 0:
        return StepOut(m, m, None, pair)
    n = len(ctx.levels) - 1
    p = min(order, i + 1, n - i) if ctx.levels[-1] == 0 else min(order, i + 1)
    ms = (m,) if carry is None else (m, *carry.m)[:order]
    b_h, res = _residual(ctx, i, ms, p, variant, None)
    h = math.log(sigma) - math.log(sigma_next)
    x_next = (sigma_next / sigma) * x_c - math.expm1(-h) * m
    if res is not None:
        x_next = x_next - b_h * res
    return StepOut(x_next, m, UniPCCarry(x if f is not None else None, f, ms, p), pair)


UNIPC = register(
    Solver(
        "unipc", unipc_step, order=3, nfe=lambda n, options, to_zero: n,
        doc="UniPC (diffusers UniPCMultistepScheduler), orders 1-3, bh1/bh2; pair: previous evaluated point, sign -1",
    )
)
