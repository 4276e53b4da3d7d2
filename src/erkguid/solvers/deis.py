"""DEIS (Zhang & Chen 2023): exponential-integrator Adams-Bashforth steps, in three forms.

With the EDM drift f = dx/dsigma = eps (Eq. 1), ``x_{i+1} = x_i + sum_j c_{i,j} f_{i-j}`` where
``c_{i,j}`` integrates the Lagrange basis polynomial ``L_j`` through the last k evaluated nodes
(k = min(order, i + 1): lower order while the history fills):

* ``mode="tab"`` (the paper's DEIS, diff-sampler's default; Table 4's DEIS-tAB3): eps is a polynomial
  in VP time t, so ``c_{i,j} = int_{t_i}^{t_{i+1}} L_j(tau) dsigma/dtau dtau``. In the variable sigma this
  is ``int_{sigma_i}^{sigma_{i+1}} L_j(t(sigma)) dsigma`` with ``t(sigma)`` analytic on the interval (the
  integrand of the t form has a 1/sqrt(t) singularity at sigma = 0), computed by composite
  Gauss-Legendre quadrature (32 nodes per piece, pieces graded geometrically towards sigma = 0) in
  float64: within a few ulps of an adaptive reference quadrature (tested against scipy's ``quad``).
  t(sigma) is the VP schedule fitted to EDM's range (:func:`~erkguid.schedules.vp_fit` defaults), as
  diff-sampler maps EDM sigmas to DEIS time whatever the grid.
* ``mode="rhoab"``: eps is a polynomial in sigma itself; ``c_{i,j} = int L_j(s) ds`` exactly. With
  order 4 this is k-diffusion's ``sample_lms`` (see :mod:`.lms`).
* ``mode="logrho"`` (diffusers' ``DEISMultistepScheduler``, ``algorithm_type="deis"``, ``solver_type="logrho"``):
  eps is a polynomial in log rho, where diffusers' rho = sigma_t / alpha_t is EDM's sigma and its VP update
  ``x_vp' = alpha' (x_vp / alpha + sum_j c_j eps_j)`` is the EDM update above, so
  ``c_{i,j} = int_{sigma_i}^{sigma_{i+1}} L_j(log s) ds``. In ``u = log(s / sigma_i)`` the integrand is
  ``sigma_i P_j(u) e^u``; with ``H = log(sigma_{i+1} / sigma_i)`` and ``w = u / H`` this is
  ``sigma_i H sum_k p_jk J_k(H)``, ``J_k(H) = int_0^1 w^k e^{Hw} dw`` (a power series for |H| <= 1, else the
  recurrence ``J_k = (e^H - k J_{k-1}) / H``): closed form, without the cancellation of diffusers' antiderivative
  differences. The step to sigma = 0 is ``-sigma_i sum_k p_jk (-1)^k k!`` (the integral over u < 0).

``lower_order_final`` (any mode; diffusers' flag of that name, which DEIS, DPM-Solver and UniPC default to True):
with fewer than 15 steps in the run's grid, step i uses order ``min(order, i + 1, N - i)``: the last step
is first order, the one before at most second. A run's grid is all it sees: a grid split in two lowers the
order at the end of its first part too (pass ``False`` there to continue exactly).

The coefficients depend only on the grid and are computed once per run by the solver's setup hook.
The step to sigma = 0 uses the same formula (all nodes are > 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from ..schedules import vp_fit, vp_time
from .base import Solver, StepContext, StepOut, register, to_d
from .multistep import History, previous_pair, push

MODES = ("tab", "rhoab", "logrho")
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(32)


def lagrange_integrals(nodes: np.ndarray, a: float, b: float) -> np.ndarray:
    """``[int_a^b L_j(s) ds for j]`` for the Lagrange basis on ``nodes`` (exact polynomial integral).

    Computed in the shifted, scaled variable u = (s - a) / (b - a) for conditioning.
    """
    scale = b - a
    u = (np.asarray(nodes, dtype=np.float64) - a) / scale
    out = np.empty(len(u))
    for j in range(len(u)):
        others = np.delete(u, j)
        poly = np.poly(others) / np.prod(u[j] - others) if len(others) else np.array([1.0])
        prim = np.polyint(poly)
        out[j] = (np.polyval(prim, 1.0) - np.polyval(prim, 0.0)) * scale
    return out


def _pieces(a: float, b: float) -> list[tuple[float, float]]:
    """Split [min(a,b), max(a,b)] at 1e-3 * 2^k so that each piece has hi <= 2 lo (or starts at 0)."""
    lo, hi = min(a, b), max(a, b)
    cuts = [lo]
    c = 1e-3
    while c < hi:
        if c > lo:
            cuts.append(c)
        c *= 2
    cuts.append(hi)
    return list(zip(cuts[:-1], cuts[1:]))


def tab_integrals(nodes_t: np.ndarray, a: float, b: float, beta_d: float, beta_min: float) -> np.ndarray:
    """``[int_a^b L_j(t(s)) ds for j]``: Lagrange basis on VP-time ``nodes_t``, integrated over sigma from a to b.

    Composite 32-point Gauss-Legendre in sigma (t(sigma) is analytic there; see the module docstring).
    """
    t_nodes = np.asarray(nodes_t, dtype=np.float64)
    out = np.zeros(len(t_nodes))
    for lo, hi in _pieces(a, b):
        s = 0.5 * (hi - lo) * _GL_NODES + 0.5 * (hi + lo)
        w = 0.5 * (hi - lo) * _GL_WEIGHTS
        c = np.log1p(s**2)
        r = np.sqrt(beta_min**2 + 2 * beta_d * c)
        t = (r - beta_min) / beta_d if beta_min <= 0 else 2 * c / (r + beta_min)
        for j in range(len(t_nodes)):
            others = np.delete(t_nodes, j)
            basis = np.prod((t[:, None] - others) / (t_nodes[j] - others), axis=1)
            out[j] += w @ basis
    return out if b >= a else -out


def _exp_moments(h: float, kmax: int) -> np.ndarray:
    """``[J_k(h) = int_0^1 w^k e^{h w} dw for k = 0..kmax]`` for a finite h, without cancellation for small |h|."""
    if abs(h) <= 1.0:  # J_k = sum_n h^n / (n! (n + k + 1)): 30 terms reach 1/30! < 1e-32
        term, out = 1.0, np.zeros(kmax + 1)
        for n in range(30):
            out += term / (n + np.arange(kmax + 1) + 1)
            term *= h / (n + 1)
        return out
    rec = [math.expm1(h) / h]
    for k in range(1, kmax + 1):  # each step scales the previous error by k / |h| < k (kmax <= 3: at most 6x)
        rec.append((math.exp(h) - k * rec[-1]) / h)
    return np.array(rec)


def logrho_integrals(nodes: np.ndarray, a: float, b: float) -> np.ndarray:
    """``[int_a^b L_j(log s) ds for j]``: the Lagrange basis on ``log(nodes)`` (nodes > 0, the newest ``a``), closed form.

    ``b = 0`` allowed (the integrand's limit s P(log s) -> 0 makes the integral finite); see the module docstring.
    """
    u = np.log(np.asarray(nodes, dtype=np.float64) / a)
    scale = math.log(b / a) if b > 0 else 1.0
    w = u / scale
    moments = _exp_moments(scale, len(u) - 1) if b > 0 else None
    out = np.empty(len(u))
    for j in range(len(u)):
        others = np.delete(w, j)
        poly = np.poly(others) / np.prod(w[j] - others) if len(others) else np.array([1.0])
        p = poly[::-1]  # p[k]: coefficient of w^k
        if moments is not None:
            out[j] = a * scale * float(p @ moments[: len(p)])
        else:  # int_{-inf}^0 u^k e^u du = (-1)^k k!, negated: the step runs from a down to 0
            out[j] = -a * sum(pk * (-1) ** k * math.factorial(k) for k, pk in enumerate(p))
    return out


def deis_coefficients(sigmas: Tensor, order: int, mode: str = "rhoab", lower_order_final: bool = False) -> list[np.ndarray]:
    """Per-step AB coefficients ``c_i`` (newest drift first) for the whole grid."""
    s = sigmas.double().cpu().numpy()
    n = len(s) - 1
    if mode == "tab":
        beta_d, beta_min = vp_fit()
        t = np.array([vp_time(float(v), beta_d, beta_min) for v in s])
    coefs = []
    for i in range(n):
        k = min(order, i + 1, n - i) if lower_order_final and n < 15 else min(order, i + 1)
        if mode == "logrho":
            coefs.append(logrho_integrals(s[i - k + 1 : i + 1][::-1], float(s[i]), float(s[i + 1])))
        elif mode == "tab":
            if k == 1:  # Euler: int dsigma, exact
                coefs.append(np.array([s[i + 1] - s[i]]))
            else:
                coefs.append(tab_integrals(t[i - k + 1 : i + 1][::-1], float(s[i]), float(s[i + 1]), beta_d, beta_min))
        else:
            coefs.append(lagrange_integrals(s[i - k + 1 : i + 1][::-1], float(s[i]), float(s[i + 1])))
    return coefs


def check_order(name: str, order: object, allowed: tuple[int, ...]) -> None:
    if isinstance(order, bool) or order not in allowed:
        raise ValueError(f"solver option order must be one of {allowed} for {name}, got {order!r}")


def _deis_setup(sigmas: Tensor, options: Mapping[str, Any]) -> list[list[float]]:
    """Validate ``order`` and ``mode`` (the engine checks option types) and compute every step's coefficients once per run."""
    check_order("deis", options["order"], (1, 2, 3, 4))
    if options["mode"] not in MODES:
        raise ValueError(f"solver option mode must be one of {MODES} for deis, got {options['mode']!r}")
    coefs = deis_coefficients(sigmas, options["order"], options["mode"], options["lower_order_final"])
    return [[float(c) for c in cs] for cs in coefs]


def deis_step(
    ctx: StepContext, i: int, x: Tensor, carry: History | None = None, *, order: int = 3, mode: str = "tab",
    lower_order_final: bool = False,
) -> StepOut:
    """One DEIS step (``mode`` ``"tab"``, ``"rhoab"`` or ``"logrho"``, ``order`` 1-4; coefficients from ``ctx.plan``).

    Embedded pair (Table 9, DEIS): ``(x_i, f_i)`` vs ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``,
    beta in {0, -1}, i.e. ``ErkPair(sign=-1)``: the correction is ``x_{i+1} + h beta z^2 <f_i, v> v``.
    """
    sigma = ctx.sigma(i)
    denoised = ctx.denoise(x, sigma)
    f = to_d(x, sigma, denoised)
    pair = previous_pair(ctx.levels, i, x, f, carry, reduce=ctx.reduce_pair)
    fs = (f,) if carry is None else (f, *carry.fs)
    x_next = x + sum(cj * fj for cj, fj in zip(ctx.plan[i], fs))
    return StepOut(x_next, denoised, push(carry, x if ctx.want_pair else None, f, max(order - 1, 1)), pair)


DEIS = register(
    Solver(
        "deis", deis_step, order=3, nfe=lambda n, options, to_zero: n, setup=_deis_setup,
        doc="DEIS tAB (eps polynomial in VP time; mode='rhoab': in sigma, 'logrho': in log sigma as diffusers), orders 1-4; "
            "pair: previous point, sign -1",
    )
)
