"""ERK-Guid: the one correction every solver shares (Kong et al. 2026, Eq. 17-20, Alg. 1, Table 9).

A solver never applies the correction itself. Each step exposes an :class:`ErkPair` built from
values it has already computed (zero extra network evaluations); the sampling loop hands that
pair to :func:`erk_guid`. The pair carries the solver-specific parts of Table 9 (which two
states, which step size ``h``, the sign of beta), so the formula below is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ._batch import acc_dtype, append_dims, bdot, bnorm, bsafe_div
from ._validate import strength

Scaling = Literal["z2", "abs", "alpha", "sat"]
SCALINGS: tuple[str, ...] = ("z2", "abs", "alpha", "sat")


@dataclass(frozen=True)
class ErkPair:
    """An embedded pair of states with their drifts, as listed in Table 9.

    Attributes:
        x: the state whose drift is projected (Heun: ``x_i``; DPM-Solver-2: ``x_i``; DEIS: ``x_i``).
        f: the drift ``f(x; sigma)`` at ``x`` (``f_i`` of Alg. 1, line 4).
        x_alt: the embedded partner (Heun: buffered ``x_i^Euler``; DPM-Solver-2: the
            intermediate point; DEIS: ``x_{i-1}``).
        f_alt: the drift at ``x_alt``.
        h: the step size that scales ``z`` and the correction (Table 9 column ``h``).
        sign: +1 for beta in {0, 1}; -1 for beta in {0, -1} (DEIS).
        reduced: ``(||x - x_alt||, f - f_alt, <f, f - f_alt>)`` when the pair was folded at once by
            :meth:`reduce` (then ``f``, ``x_alt`` and ``f_alt`` are ``None``); ``None`` otherwise.
    """

    x: Tensor
    f: Tensor | None
    x_alt: Tensor | None
    f_alt: Tensor | None
    h: float
    sign: float = 1.0
    reduced: tuple[Tensor, Tensor, Tensor] | None = None

    @classmethod
    def reduce(cls, x: Tensor, f: Tensor, x_alt: Tensor, f_alt: Tensor, h: float, sign: float = 1.0, *,
               consume: bool = False) -> ErkPair:
        """The pair with everything ERK-Guid reads from it computed now (Eq. 17's norms and Eq. 19's
        inner product), so a step can free its partner (and the drift) before its own peak: it then
        holds one state tensor, ``f - f_alt``, instead of three. :func:`erk_guid` gives the same result
        bit for bit; only for runs where nothing else reads the pair (no callback).

        ``consume=True``: the caller gives up ``x_alt`` and ``f_alt`` (nothing else holds them), which
        then serve as the scratch of ``x - x_alt``, ``f - f_alt`` and the inner product: the reduction
        allocates no state-sized tensor (only the corrected state is new).
        Same values bit for bit; ignored where autograd tracks the pair or the dtypes differ.
        """
        acc = acc_dtype(x.dtype)
        if consume and _scratch_ok(x, f, x_alt, f_alt, acc=acc):
            ndx = bnorm(torch.sub(x, x_alt, out=x_alt))
            df = torch.sub(f, f_alt, out=f_alt)
            return cls(x, None, None, None, h, sign, (ndx, df, bdot(f, df, scratch=x_alt)))
        df = f - f_alt
        return cls(x, None, None, None, h, sign, (bnorm(x - x_alt), df, bdot(f, df)))

    def __post_init__(self) -> None:
        if self.reduced is None and (self.f is None or self.x_alt is None or self.f_alt is None):
            raise TypeError("ErkPair needs f, x_alt and f_alt unless it is reduced (ErkPair.reduce)")

    def full(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(f, x_alt, f_alt)`` of a pair that is not reduced (a TypeError names a reduced one)."""
        if self.f is None or self.x_alt is None or self.f_alt is None:
            raise TypeError("this ErkPair was reduced (ErkPair.reduce): its f, x_alt and f_alt were released")
        return self.f, self.x_alt, self.f_alt


def _scratch_ok(*ts: Tensor, acc: torch.dtype) -> bool:
    """Whether tensors can be overwritten in place as the correction's scratch: one shape, contiguous, in the
    accumulation dtype, and no autograd history to corrupt."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in ts)
    return not grad and all(t.shape == ts[0].shape and t.dtype == acc and t.is_contiguous() for t in ts)


@dataclass(frozen=True)
class Estimate:
    """Per-sample stiffness ``rho`` (Eq. 17) and unit eigenvector ``v`` (Eq. 18)."""

    rho: Tensor  # [B], float32/float64
    v: Tensor  # [B, *S] in the accumulation dtype; zero where the drift difference is zero


def _drift_difference(pair: ErkPair) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(df, ||df||, ||dx||, rho): the ERK drift difference, the two norms and Eq. 17.

    Three passes over state-sized tensors (dx is reduced and freed at once, df is kept for the
    update); everything after is arithmetic on ``[B]`` vectors. ``df`` is a fresh tensor unless
    the pair is :meth:`~ErkPair.reduce`-d (then it is the pair's own and must not be written to).
    """
    if pair.reduced is not None:
        ndx, df, _ = pair.reduced
    else:
        f, x_alt, f_alt = pair.full()
        ndx = bnorm(pair.x - x_alt)
        df = f - f_alt
    ndf = bnorm(df)
    return df, ndf, ndx, bsafe_div(ndf, ndx)


def estimate(pair: ErkPair) -> Estimate:
    """Stiffness rho = ||df|| / ||dx|| (Eq. 17) and v = df / ||df|| (Eq. 18), per sample.

    A sample whose ``dx`` is zero gets ``rho = 0``; a sample whose ``df`` is zero gets ``v = 0``.
    """
    df, ndf, _, rho = _drift_difference(pair)
    inv = append_dims(bsafe_div(torch.ones_like(ndf), ndf), df.ndim)
    v = df.to(ndf.dtype) * inv if pair.reduced is not None else df.to(ndf.dtype).mul_(inv)  # in place when df is ours
    return Estimate(rho=rho, v=v)


def alpha(z: Tensor) -> Tensor:
    """alpha(z) = (e^z - 1)/z - 1 - z/2 with alpha(0) = 0 (Eq. 15); stable near 0 by its series."""
    small = z.abs() < 1e-3
    zs = torch.where(small, torch.ones_like(z), z)
    exact = torch.expm1(zs) / zs - 1 - zs / 2
    series = z**2 / 6 + z**3 / 24 + z**4 / 120
    return torch.where(small, series, exact)


def scale_z(z: Tensor, scaling: str) -> Tensor:
    """Modulation of z (App. B.3): ``z2`` -> z^2 (paper default), ``abs`` -> |z|, ``alpha`` -> alpha(z).

    ``sat`` -> z^2 / (1 + z^2) is not in the paper: it equals z^2 to leading order where z is small (the
    regime where Eq. 19 is a consistent local-error correction) and saturates at 1, so the correction can
    never exceed the step's own component ``h <f, v>`` along the estimated stiff direction.
    """
    if scaling == "z2":
        return z * z
    if scaling == "abs":
        return z.abs()
    if scaling == "alpha":
        return alpha(z)
    if scaling == "sat":
        z2 = z * z
        return z2 / (1 + z2)
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")


@dataclass(frozen=True)
class Correction:
    """The result of one ERK-Guid application.

    Attributes:
        x: corrected state (same dtype as the input state).
        rho: per-sample stiffness estimate, ``[B]``.
        beta: per-sample gate in {0, sign}, ``[B]``.
        norm: per-sample norm of the applied correction ``||x_corrected - x_solver||``, ``[B]``.
    """

    x: Tensor
    rho: Tensor
    beta: Tensor
    norm: Tensor


def check_strengths(w_stiff: float, w_con: float) -> tuple[float, float]:
    """``(w_stiff, w_con)`` as floats; numpy scalars and 0-d tensors are accepted, bools refused (TypeError),
    negative or non-finite values raise a ValueError naming the argument."""
    return strength("w_stiff", w_stiff), strength("w_con", w_con)


def erk_guid(
    x_next: Tensor, pair: ErkPair, w_stiff: float, w_con: float, scaling: str = "z2", trust: float | None = None,
    *, overwrite: bool = False,
) -> Correction:
    """Apply Eq. 19 / Eq. 63 to a solver's proposal ``x_next``.

    ``x_hat = x_next - sign * h * beta * s(z) * <f, v> v`` with ``beta = 1[rho > w_con]``,
    ``z = w_stiff * h * rho`` and ``s`` the scaling of App. B.3 (``z^2`` by default).
    Reductions run in float32 (float64 for float64 states); the result keeps ``x_next``'s dtype.

    ``trust`` (not in the paper; ``None`` = the paper's formula, bit for bit) bounds each sample's
    correction norm by ``trust * ||dx||``, the distance between the pair's two states. For Heun ``dx``
    is the previous step's embedded error estimate ``x^Heun - x^Euler``; for the other pairs it is the
    distance the solver itself moved between them. Eq. 19 is a local-error correction, so a correction
    larger than the error the pair measured is extrapolation, not correction: this is where z^2, which has
    no bound, blows up multistep solvers on stiff data.

    ``overwrite=True``: the caller gives up ``x_next`` (nothing else holds it), and the corrected state is
    written over it (same values; ignored where the dtypes differ or autograd tracks it).
    """
    df, ndf, ndx, rho = _drift_difference(pair)
    h = float(pair.h)
    gate = rho > w_con
    inv = bsafe_div(torch.ones_like(ndf), ndf)  # v = df / ||df|| is never materialised
    # [B]: Eq. 19's scalar sign * h * beta * s(z) * <f, v>; beta = 0 lanes are exactly 0
    dot = pair.reduced[2] if pair.reduced is not None else bdot(pair.full()[0], df)
    coef = torch.where(gate, (pair.sign * h) * scale_z(rho * (w_stiff * h), scaling) * dot * inv, 0.0)
    if trust is not None:  # |coef| is the correction's norm (v has unit norm)
        coef = coef.clamp(-trust * ndx, trust * ndx)
    scale = append_dims(coef * inv, df.ndim)
    if overwrite and _scratch_ok(x_next, df, acc=ndf.dtype):  # the proposal is ours: x_hat over it
        x_hat = torch.addcmul(x_next, scale, df, value=-1.0, out=x_next)
    elif pair.reduced is None and df.dtype == ndf.dtype and df.shape == x_next.shape:  # df is ours: x_hat over it
        x_hat = torch.addcmul(x_next.to(ndf.dtype), scale, df, value=-1.0, out=df)
    else:
        x_hat = torch.addcmul(x_next.to(ndf.dtype), scale, df.to(ndf.dtype), value=-1.0)
    return Correction(x=x_hat.to(x_next.dtype), rho=rho, beta=gate.to(rho.dtype) * pair.sign, norm=coef.abs())
