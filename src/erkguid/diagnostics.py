"""Reference spectra of the probability-flow drift and the paper's alignment measurements.

The drift is f(x; sigma) = (x - D(x; sigma)) / sigma (Eq. 1); its Jacobian J = -sigma * Hessian of
log p is symmetric (Eq. 10). This module gives, per sample:

* :func:`exact_jacobian` - J built column by column from JVPs with one-hot tangents (App. B.1),
  for small dimension;
* :func:`power_iteration` - JVP power iteration from a seeded random start for any dimension
  (App. B.2: 300 iterations), with the estimate after every iteration (Fig. 7);
* :func:`spectrum` - eigenvalues/eigenvectors sorted by |lambda|, oriented toward the drift
  (sign chosen so that <v, f> >= 0, App. B.1/B.2 "via Eq. 15");
* :func:`eigenspace_alignment` - the fraction of a vector's norm in the dominant EIGENSPACE
  span{v_k : |lambda_k| >= (1 - tol) |lambda_max|}; unlike |cos(u, v_1)| it stays well defined when the
  dominant eigenvalue is (nearly) degenerate, e.g. near a Gaussian component whose covariance has many
  eigenvalues at the same floor (``digits_64d``), where v_1 is an arbitrary vector of that eigenspace;
* :func:`heun_euler_step` / :func:`substep_reference` - a single Heun step with its embedded Euler
  solution and the 100-substep reference of App. B.1, for the LTE and the ERK solution difference
  (both runs of the step engine, :class:`erkguid.engine.Run`, on grids that end above 0).

The cost-free ERK estimators themselves (Eq. 17-18) live in :func:`erkguid.correction.estimate`.
Every computation is per sample; with a row-wise denoiser a sample's result does not depend on the rest
of its batch (see docs/validation.md for matrix-product models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._batch import append_dims, bdot, bnorm, bsafe_div, sigma_vector
from .engine import Run
from .noise import PerSampleNoise

Denoiser = Callable[..., Tensor]

DOMINANT_TOL = 0.05
"""Default relative tolerance of the dominant eigenspace: eigenvalues within 5% of |lambda_max| in magnitude."""


def drift_fn(denoiser: Denoiser, sigma: float | Tensor, **extra: Any) -> Callable[[Tensor], Tensor]:
    """``x -> f(x; sigma) = (x - D(x; sigma)) / sigma`` (Eq. 1), sigma scalar or per sample."""

    def f(x: Tensor) -> Tensor:
        s = sigma_vector(sigma, x, dtype=x.dtype, positive=True)
        return (x - denoiser(x, s, **extra)) / append_dims(s, x.ndim)

    return f


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample cosine similarity ``<a, b> / (||a|| ||b||)`` (0 where a norm is 0) -> ``[B]``."""
    return bsafe_div(bdot(a, b), bnorm(a) * bnorm(b))


def orient(v: Tensor, f: Tensor) -> Tensor:
    """Flip each sample's ``v`` so that ``<v, f> >= 0`` (the paper's orientation toward the drift)."""
    sign = torch.where(bdot(v, f) < 0, -1.0, 1.0).to(v.dtype)
    return v * append_dims(sign, v.ndim)


def exact_jacobian(denoiser: Denoiser, x: Tensor, sigma: float | Tensor, **extra: Any) -> Tensor:
    """J = df/dx per sample, ``[B, d, d]`` with ``d = prod(x.shape[1:])``; column j is J e_j (JVP).

    One batched JVP per coordinate (App. B.1); meant for small ``d`` (tree: 2, digits: 64).
    """
    f = drift_fn(denoiser, sigma, **extra)
    b, d = x.shape[0], x[0].numel()
    cols = []
    for j in range(d):
        e = torch.zeros(b, d, dtype=x.dtype, device=x.device)
        e[:, j] = 1.0
        jv = torch.func.jvp(f, (x,), (e.reshape(x.shape),))[1]
        cols.append(jv.reshape(b, d))
    return torch.stack(cols, dim=2)


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of the (symmetrised) drift Jacobian, per sample.

    Attributes:
        eigvals: ``[B, d]`` sorted by decreasing ``|lambda|`` (``eigvals[:, 0]`` is the dominant one).
        eigvecs: ``[B, d, d]``; column k pairs with ``eigvals[:, k]``, oriented so ``<v_k, f> >= 0``.
    """

    eigvals: Tensor
    eigvecs: Tensor

    @property
    def stiffness(self) -> Tensor:
        """|lambda_max| per sample ``[B]`` (the reference the estimator rho of Eq. 17 targets)."""
        return self.eigvals[:, 0].abs()

    def vector(self, k: int, shape: Sequence[int]) -> Tensor:
        """The k-th eigenvector of every sample, reshaped to the state shape ``[B, *shape]``."""
        return self.eigvecs[:, :, k].reshape((-1, *shape))

    def dominant_mask(self, tol: float = DOMINANT_TOL) -> Tensor:
        """``[B, d]`` bool: eigenpair k belongs to the dominant eigenspace, ``|lambda_k| >= (1 - tol) |lambda_max|``."""
        if not 0.0 <= tol < 1.0:
            raise ValueError(f"tol must be in [0, 1), got {tol!r}")
        mag = self.eigvals.abs()
        return mag >= (1.0 - tol) * mag[:, :1]

    def dominant_dim(self, tol: float = DOMINANT_TOL) -> Tensor:
        """Dimension of the dominant eigenspace per sample ``[B]`` (1 for a well separated lambda_max)."""
        return self.dominant_mask(tol).sum(dim=1)


def spectrum(jac: Tensor, f: Tensor) -> Spectrum:
    """Eigenpairs of ``(J + J^T)/2`` sorted by ``|lambda|`` (descending), oriented toward ``f`` (Eq. 15)."""
    if jac.ndim != 3 or jac.shape[1] != jac.shape[2]:
        raise ValueError(f"jac must be [B, d, d], got {tuple(jac.shape)}")
    evals, evecs = torch.linalg.eigh(0.5 * (jac + jac.transpose(1, 2)))
    order = evals.abs().argsort(dim=1, descending=True)
    evals = evals.gather(1, order)
    evecs = evecs.gather(2, order[:, None, :].expand_as(evecs))
    ff = f.reshape(f.shape[0], -1).to(evecs.dtype)
    sign = torch.where(torch.einsum("bdk,bd->bk", evecs, ff) < 0, -1.0, 1.0).to(evecs.dtype)
    return Spectrum(evals, evecs * sign[:, None, :])


@dataclass(frozen=True)
class EigenspaceAlignment:
    """Alignment of vectors with the dominant eigenspace S, per sample.

    Attributes:
        alignment: ``[B]`` ``||P_S u|| / ||u||`` in [0, 1] (0 where ``u = 0``); equals ``|cos(u, v_1)|`` when
            ``dim S = 1``.
        dim: ``[B]`` ``dim S``, the number of eigenvalues with ``|lambda_k| >= (1 - tol) |lambda_max|``.
        ambient_dim: ``d``, the state dimension.
    """

    alignment: Tensor
    dim: Tensor
    ambient_dim: int

    def random_baseline(self) -> Tensor:
        """``sqrt(dim S / d)`` per sample: the RMS alignment of a uniformly random direction (about its median)."""
        return (self.dim.double() / self.ambient_dim).sqrt()


def eigenspace_alignment(u: Tensor, sp: Spectrum, tol: float = DOMINANT_TOL) -> EigenspaceAlignment:
    """Fraction of ``u``'s norm in the dominant eigenspace of ``sp``: ``||P_S u|| / ||u||`` per sample.

    ``S = span{v_k : |lambda_k| >= (1 - tol) |lambda_max|}`` (``tol`` default 0.05). The paper's alignment
    measure is ``|cos(u, v_1)|`` (Fig. 2, 3b); when lambda_max is (nearly) degenerate v_1 is an arbitrary
    vector of S and that cosine measures nothing, while this fraction does not depend on the choice of
    basis of S. For a simple lambda_max (``dim S = 1``) the two coincide.
    """
    b, d = sp.eigvals.shape
    if u.shape[0] != b or u[0].numel() != d:
        raise ValueError(f"u must be [B={b}, ...] with {d} entries per sample, got {tuple(u.shape)}")
    mask = sp.dominant_mask(tol)
    coords = (sp.eigvecs * u.reshape(b, d, 1).to(sp.eigvecs.dtype)).sum(dim=1)  # u in the eigenbasis, row by row
    frac = bsafe_div(bnorm(coords * mask), bnorm(u))
    return EigenspaceAlignment(frac.clamp_max(1.0), mask.sum(dim=1), d)


def exact_spectrum(denoiser: Denoiser, x: Tensor, sigma: float | Tensor, **extra: Any) -> Spectrum:
    """:func:`spectrum` of :func:`exact_jacobian` at ``x``, oriented toward f(x; sigma)."""
    return spectrum(exact_jacobian(denoiser, x, sigma, **extra), drift_fn(denoiser, sigma, **extra)(x))


@dataclass(frozen=True)
class PowerResult:
    """JVP power iteration result, per sample.

    Attributes:
        eigval: ``[B]`` signed Rayleigh quotient <v, J v> at the last iterate (dominant eigenvalue).
        vector: ``[B, *S]`` unit dominant eigenvector, oriented so that ``<v, f> >= 0``.
        history: ``[iters, B]`` stiffness estimate ||J v_k|| after each iteration (Fig. 7).
    """

    eigval: Tensor
    vector: Tensor
    history: Tensor

    @property
    def stiffness(self) -> Tensor:
        return self.eigval.abs()


def power_iteration(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float | Tensor,
    *,
    iters: int = 300,
    seeds: Sequence[int] | Tensor | None = None,
    **extra: Any,
) -> PowerResult:
    """Dominant eigenpair of J = df/dx by JVP power iteration (App. B.2), any dimension.

    ``v_0`` is standard normal from one generator per sample (``seeds``, default ``0..B-1``);
    ``v_{k+1} = J v_k / ||J v_k||``. The iteration converges to the eigenvalue of largest magnitude.
    """
    if int(iters) != iters or iters < 1:
        raise ValueError(f"iters must be a positive integer, got {iters!r}")
    f = drift_fn(denoiser, sigma, **extra)
    noise = PerSampleNoise(range(x.shape[0]) if seeds is None else seeds, x.device)
    if len(noise) != x.shape[0]:
        raise ValueError(f"seeds holds {len(noise)} seeds for a batch of {x.shape[0]}")
    v = noise(x)
    v = v * append_dims(bsafe_div(torch.ones(x.shape[0], dtype=v.dtype, device=x.device), bnorm(v).to(v.dtype)), x.ndim)
    hist = []
    fx = None
    for _ in range(int(iters)):
        fx, jv = torch.func.jvp(f, (x,), (v,))[:2]
        n = bnorm(jv)
        hist.append(n)
        v_new = jv * append_dims(bsafe_div(torch.ones_like(n), n).to(jv.dtype), x.ndim)
        v = torch.where(append_dims(n > 0, x.ndim), v_new, v)
    assert fx is not None
    jv = torch.func.jvp(f, (x,), (v,))[1]
    lam = bdot(v, jv)
    return PowerResult(lam, orient(v, fx), torch.stack(hist))


def heun_euler_step(
    denoiser: Denoiser, x: Tensor, sigma: float, sigma_next: float, **extra: Any
) -> tuple[Tensor, Tensor]:
    """One Heun step (Eq. 5) from ``x`` and its embedded Euler solution (Eq. 3): ``(x_heun, x_euler)``.

    One step of the engine's Heun, so ``x_heun - x_euler`` is the ERK solution difference of Eq. 16.
    """
    if not sigma > sigma_next > 0:
        raise ValueError(f"need sigma > sigma_next > 0, got {sigma} and {sigma_next}")
    state = Run(denoiser, x, [sigma, sigma_next], solver="heun", want_pair=True, extra_args=extra).finish()
    return state.x, state.carry.x_euler


def substep_reference(
    denoiser: Denoiser, x: Tensor, sigma: float, sigma_next: float, substeps: int = 100, **extra: Any
) -> Tensor:
    """The step ``sigma -> sigma_next`` split into ``substeps`` equal Heun substeps (App. B.1 reference)."""
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    if not sigma > sigma_next > 0:
        raise ValueError(f"need sigma > sigma_next > 0, got {sigma} and {sigma_next}")
    fine = torch.linspace(sigma, sigma_next, int(substeps) + 1, dtype=torch.float64)
    return Run(denoiser, x, fine, solver="heun", want_pair=False, extra_args=extra).finish().x


def quantile_bins(values: Tensor, num_bins: int = 4) -> Tensor:
    """Bin index in ``0..num_bins-1`` of each value by its empirical quantile (Q0-25, ..., Q75-100)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    edges = torch.quantile(values.double(), torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)[1:-1])
    return torch.bucketize(values.double(), edges, right=True).clamp_max(num_bins - 1)


def binned_median(values: Tensor, bins: Tensor, num_bins: int = 4) -> list[float]:
    """Median of ``values`` within each bin (NaN for an empty bin)."""
    return [float(values[bins == k].median()) if bool((bins == k).any()) else float("nan") for k in range(num_bins)]
