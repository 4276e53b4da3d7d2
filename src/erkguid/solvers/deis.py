"""DEIS, the time-Adams-Bashforth form in sigma (Zhang & Chen 2023, 'rhoAB').

With the EDM drift f = dx/dsigma (Eq. 1), ``x_{i+1} = x_i + sum_j c_{i,j} f_{i-j}`` where
``c_{i,j} = int_{sigma_i}^{sigma_{i+1}} L_j(s) ds`` integrates exactly the Lagrange basis
polynomial through the nodes ``sigma_i, ..., sigma_{i-k+1}`` (k = min(order, i + 1): lower order
while the history fills). The coefficients depend only on the grid and are computed once, at the
first step, into the carry. The step to sigma = 0 uses the same formula (the nodes are all > 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from torch import Tensor

from .base import Solver, StepContext, StepOut, register, to_d
from .multistep import History, previous_pair, push


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


def deis_coefficients(sigmas: Tensor, order: int) -> list[np.ndarray]:
    """Per-step AB coefficients ``c_i`` (newest drift first) for the whole grid."""
    s = sigmas.double().cpu().numpy()
    coefs = []
    for i in range(len(s) - 1):
        k = min(order, i + 1)
        coefs.append(lagrange_integrals(s[i - k + 1 : i + 1][::-1], float(s[i]), float(s[i + 1])))
    return coefs


class DeisCarry(NamedTuple):
    coefs: list[np.ndarray]
    hist: History


def deis_step(ctx: StepContext, i: int, x: Tensor, carry: DeisCarry | None = None, *, order: int = 3) -> StepOut:
    """One DEIS step.

    Embedded pair (Table 9, DEIS): ``(x_i, f_i)`` vs ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``,
    beta in {0, -1}, i.e. ``ErkPair(sign=-1)``: the correction is ``x_{i+1} + h beta z^2 <f_i, v> v``.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"solver option order must be 1, 2 or 3 for deis, got {order!r}")
    coefs = deis_coefficients(ctx.sigmas, order) if carry is None else carry.coefs
    hist = None if carry is None else carry.hist
    sigma = ctx.sigma(i)
    denoised = ctx.denoise(x, sigma)
    f = to_d(x, sigma, denoised)
    pair = previous_pair(ctx.sigmas, i, x, f, hist, reduce=ctx.reduce_pair)
    c = coefs[i]
    fs = (f,) if hist is None else (f, *hist.fs)
    x_next = x + sum(float(cj) * fj for cj, fj in zip(c, fs))
    return StepOut(x_next, denoised, DeisCarry(coefs, push(hist, x if ctx.want_pair else None, f, max(order - 1, 1))), pair)


DEIS = register(
    Solver(
        "deis", deis_step, order=3, nfe=lambda n: n, options={"order": 3},
        doc="DEIS rhoAB in sigma (orders 1-3); pair: previous evaluated point, sign -1 (Table 9)",
    )
)
