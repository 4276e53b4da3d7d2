"""Shared pieces of the multistep solvers (DPM-Solver++(2M), DEIS, iPNDM, UniPC).

Their embedded pair is the one Table 9 gives DEIS: the current evaluated point ``(x_i, f_i)``
against the previous evaluated point ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``,
beta in {0, -1} (``sign = -1``). Both members are states at which the network was actually
evaluated, so ``||f_i - f_{i-1}|| / ||x_i - x_{i-1}||`` is a secant estimate of the drift's
Jacobian along the step (Eq. 17) at zero extra cost. The negative sign matches the leading
stiff error of an explicit multistep formula: for a stiff mode with z = lambda h, Adams-Bashforth
extrapolation overshoots along -f (AB2: 1 - 3z/2 + ...), so the correction gives part of the
step back, while the one-step RK pairs (Heun, DPM-Solver-2) use ``sign = +1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor

from ..correction import ErkPair
from .base import StepContext, to_d


class History(NamedTuple):
    """Evaluated points of the previous steps, newest first."""

    xs: list[Tensor]  # the newest state where the network was evaluated: the pair's partner (or [])
    fs: tuple[Tensor, ...]  # drifts there
    denoised: tuple[Tensor, ...]  # D(x; sigma) there, only for solvers that pass it (DPM-Solver++(2M)); else ()


def previous_pair(
    ctx_sigmas: Tensor | Sequence[float], i: int, x: Tensor, f: Tensor, hist: History | None,
    f_alt: Tensor | None = None, reduce: bool = False,
) -> ErkPair | None:
    """The multistep pair (x_i, f_i) vs (x_{i-1}, f_{i-1}) with h = sigma_{i-1} - sigma_i, sign -1.

    ``ctx_sigmas``: the grid, best as host floats (``ctx.levels``) so that reading it never syncs.
    ``f_alt`` defaults to the history's newest drift. With ``reduce`` (``ctx.reduce_pair``) the pair
    is folded at once (:meth:`ErkPair.reduce`) and the partner state is released from the history
    (``xs`` is a list for that), although the caller still holds the history.
    """
    if hist is None or not hist.xs:
        return None
    h = float(ctx_sigmas[i - 1]) - float(ctx_sigmas[i])
    f_alt = hist.fs[0] if f_alt is None else f_alt
    if reduce:
        pair = ErkPair.reduce(x, f, hist.xs[0], f_alt, h, -1.0)
        hist.xs.clear()
        return pair
    return ErkPair(x, f, hist.xs[0], f_alt, h, -1.0)


def denoised_history_pair(ctx: StepContext, i: int, x: Tensor, denoised: Tensor,
                          hist: History | None) -> tuple[ErkPair | None, Tensor | None]:
    """``(pair, f_i)`` for the solvers that keep D's, not drifts (DPM-Solver++(2M)/(3M)): f_i and f_{i-1} are
    rebuilt from the kept x_{i-1}, D_{i-1} (bit for bit the drifts the step saw). ``f_i`` is ``None`` when no
    pair is wanted, or when the pair was folded at once (``ctx.reduce_pair``), so nothing keeps it alive."""
    f = to_d(x, ctx.sigma(i), denoised) if ctx.want_pair else None  # only the pair reads the drift
    if f is None or hist is None or not hist.xs:
        return None, f
    f_prev = to_d(hist.xs[0], ctx.sigma(i - 1), hist.denoised[0])
    pair = previous_pair(ctx.levels, i, x, f, hist, f_prev, reduce=ctx.reduce_pair)
    return pair, None if ctx.reduce_pair else f


def push(hist: History | None, x: Tensor | None, f: Tensor | None, keep: int, denoised: Tensor | None = None) -> History:
    """Prepend the newest evaluated point and keep the newest ``keep`` drifts and D's.

    ``x``, ``f`` and ``denoised`` are kept only when given: a solver that never reads one (a plain
    solver's ``x`` is read only by the ERK pair, ``ctx.want_pair``) does not hold it alive. Only the
    newest ``x`` is kept: the pair reads no older state.
    """
    old = History([], (), ()) if hist is None else hist
    xs = [] if x is None else [x]
    fs = () if f is None else (f, *old.fs)[:keep]
    ds = () if denoised is None else (denoised, *old.denoised)[:keep]
    return History(xs, fs, ds)
