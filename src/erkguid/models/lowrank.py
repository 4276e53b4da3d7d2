"""Gaussian mixtures with low-rank-plus-isotropic covariances: exact scores in high dimension.

Component k is N(mu_k, C_k) with C_k = A_k A_k^T + f_k I, where A_k is a ``[d, r]`` factor and
f_k > 0 the covariance floor (part of the model's definition: it sets the largest drift
eigenvalue, ~1 / (f_k + sigma^2), and so the peak stiffness). Internally A_k = Q_k diag(sqrt
lam_k) V_k^T (QR of A_k, then the r x r eigenproblem of R R^T), so C_k = U_k diag(lam_k) U_k^T +
f_k I with orthonormal U_k = Q_k V_k. With c = f_k + sigma^2, Woodbury gives

    (C_k + sigma^2 I)^{-1} = (I - U_k diag(lam_k / (lam_k + c)) U_k^T) / c,
    log det(C_k + sigma^2 I) = (d - r) log c + sum_j log(lam_kj + c),

and the exact denoiser D(x; sigma) = x - sigma^2 sum_k w_k(x) (C_k + sigma^2 I)^{-1} (x - mu_k)
(Tweedie; w_k the component posteriors) costs O(B K d r) instead of O(B K d^2). Sampling uses the
symmetric square root C_k^{1/2} = sqrt(f_k) I + U_k diag(sqrt(lam_k + f_k) - sqrt(f_k)) U_k^T, a
function of C_k alone: samples do not depend on which orthonormal basis of an eigenspace LAPACK
returns, nor on the factor A_k a covariance was given by.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._batch import acc_dtype, sigma_vector
from ._mixture import MixtureBase
from .gmm import GaussianMixture


def orthonormal_factor(factors: Tensor) -> tuple[Tensor, Tensor]:
    """``(U [K, d, r], lam [K, r])`` with orthonormal columns and U diag(lam) U^T = A A^T, per component.

    QR of A (U's columns span A's column space to machine precision) followed by the r x r
    eigenproblem of R R^T; a basis choice inside a repeated eigenvalue leaves U diag(lam) U^T and
    every quantity computed here unchanged.
    """
    q, r = torch.linalg.qr(factors)
    lam, v = torch.linalg.eigh(r @ r.transpose(1, 2))
    return q @ v, lam.clamp_min(0.0)


class LowRankMixture(MixtureBase):
    """A mixture of N(mu_k, A_k A_k^T + floor_k I) with exact D(x; sigma), log-density and sampling.

    Args:
        weights: ``[K]`` non-negative mixture weights (normalised here).
        means: ``[K, d]``.
        factors: ``[K, d, r]`` low-rank factors A_k (any real matrices; r <= d).
        floor: the isotropic covariance floor, a scalar or ``[K]``; must be > 0.
        labels: optional ``[K]`` integer class of each component (for class-conditional use).
        shape: per-sample shape of states (default ``(d,)``; e.g. ``(1, 16, 16)`` for images).
        name: a short name for tables.

    The interface is :class:`~erkguid.models.GaussianMixture`'s (``denoise``/``__call__``, ``drift``,
    ``score``, ``log_prob``, ``sample``, ``shape``, ``dim``, ``sigma_data``, ...), so every sampler,
    benchmark and reference path accepts it.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor,
        factors: Tensor,
        floor: Tensor | float,
        labels: Tensor | Sequence[int] | None = None,
        shape: Sequence[int] | None = None,
        name: str = "lowrank",
    ) -> None:
        k, d = self._init_mixture(weights, means, labels, shape, name)
        a = torch.as_tensor(factors, dtype=torch.float64)
        if a.ndim != 3 or a.shape[:2] != (k, d) or not 1 <= a.shape[2] <= d:
            raise ValueError(f"factors must be [K, d, r] with 1 <= r <= d; got {tuple(a.shape)} for K={k}, d={d}")
        f = torch.as_tensor(floor, dtype=torch.float64).flatten()
        f = f.expand(k).clone() if f.numel() == 1 else f
        if f.numel() != k or not torch.isfinite(f).all() or (f <= 0).any():
            raise ValueError(f"floor must be a positive scalar or one positive value per component ({k})")
        if not (torch.isfinite(a).all() and torch.isfinite(self.means).all()):
            raise ValueError("means and factors must be finite")
        self.factors = a
        self.floor = f
        self.bases, self.evals = orthonormal_factor(a)  # C_k = U_k diag(evals_k) U_k^T + floor_k I

    # ------------------------------------------------------------------ basics
    @property
    def rank(self) -> int:
        return int(self.factors.shape[2])

    @property
    def sigma_data(self) -> float:
        """Root-mean-square standard deviation per coordinate of p_data."""
        mean = (self.weights[:, None] * self.means).sum(0)
        within = (self.weights * (self.evals.sum(1) / self.dim + self.floor)).sum()
        between = (self.weights * ((self.means - mean) ** 2).mean(1)).sum()
        return float((within + between).sqrt())

    def __repr__(self) -> str:
        return (f"LowRankMixture({self.name!r}, K={self.num_components}, d={self.dim}, rank={self.rank}, "
                f"floor={float(self.floor.min()):.3g}..{float(self.floor.max()):.3g}, shape={self.shape})")

    def covariances(self) -> Tensor:
        """The dense ``[K, d, d]`` covariances A_k A_k^T + floor_k I (float64)."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return self.factors @ self.factors.transpose(1, 2) + self.floor[:, None, None] * eye

    def to_dense(self) -> GaussianMixture:
        """The same distribution as a dense :class:`GaussianMixture` (O(K d^2) memory; for checks)."""
        return GaussianMixture(self.weights, self.means, self.covariances(), self.labels, self.shape, self.name)

    def with_labels(self, labels: Tensor | Sequence[int] | None, name: str | None = None) -> LowRankMixture:
        """The same distribution with component class ``labels`` (``[K]``; None: unlabelled)."""
        return LowRankMixture(self.weights, self.means, self.factors, self.floor, labels, self.shape, name or self.name)

    def broadened(self, factor: float, name: str | None = None) -> LowRankMixture:
        """A 'weaker' model: every covariance scaled by ``factor`` (A_k -> sqrt(factor) A_k, floor_k -> factor
        floor_k), as :meth:`GaussianMixture.broadened` (the autoguidance toy's weak model)."""
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        return LowRankMixture(self.weights, self.means, self.factors * math.sqrt(factor), self.floor * factor, self.labels,
                              self.shape, name or f"{self.name}-broad")

    def _params(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        """(log pi, mu, lam, U as [d, K r], mu_k . U_k [K, r], floor) in ``dtype`` on ``device``."""
        key = (dtype, device)
        if key not in self._cache:
            ucat = self.bases.permute(1, 0, 2).reshape(self.dim, -1)
            mu_p = torch.einsum("kd,kdr->kr", self.means, self.bases)
            self._cache[key] = tuple(
                t.to(device, dtype) for t in (self.weights.log(), self.means, self.evals, ucat, mu_p, self.floor)
            )
        return self._cache[key]

    def _terms(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None) -> tuple[Tensor, ...]:
        """(logits [B,K] float64, xf [B,d], p = U_k^T (x - mu_k) [B,K,r], shrink [B,K,r], c [B,K], s2 [B]).

        Matrix products run in the accumulation dtype; the squared distances ||x - mu_k||^2 and the
        logits in float64 (the expanded distance would cancel in float32 near a mean)."""
        dt = acc_dtype(x.dtype)
        xf = self._flat(x).to(dt)
        b, k, r = xf.shape[0], self.num_components, self.rank
        logpi, mu, lam, ucat, mu_p, f = self._params(dt, x.device)
        s2 = sigma_vector(sigma, xf, dtype=dt) ** 2
        c = f[None, :] + s2[:, None]  # [B, K]
        p = (xf @ ucat).reshape(b, k, r) - mu_p[None]  # coordinates of x - mu_k in the low-rank subspace
        shrink = lam[None] / (lam[None] + c[:, :, None])  # [B, K, r]
        x64, mu64 = xf.double(), self._params(torch.float64, x.device)[1]
        dist = ((x64 * x64).sum(1, keepdim=True) - 2 * x64 @ mu64.T + (mu64 * mu64).sum(1)[None]).clamp_min(0.0)
        c64 = c.double()
        quad = (dist - (p.double() ** 2 * shrink.double()).sum(-1)) / c64
        logdet = (self.dim - r) * c64.log() + (lam.double()[None] + c64[:, :, None]).log().sum(-1)
        logits = logpi.double()[None] - 0.5 * (quad + logdet + self.dim * math.log(2 * math.pi))
        return self._class_mask(logits, class_labels), xf, p, shrink, c, s2

    # ------------------------------------------------------------------ exact quantities
    def denoise(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """Exact D(x; sigma) = x - sigma^2 sum_k w_k (C_k + sigma^2 I)^{-1} (x - mu_k), per-sample sigma.

        With a_k = w_k / c_k: sum_k w_k (C_k + sigma^2 I)^{-1} (x - mu_k) = (sum_k a_k) x - sum_k a_k mu_k -
        sum_k a_k U_k diag(shrink_k) p_k, three matrix products (no [B, K, d] intermediate)."""
        logits, xf, p, shrink, c, s2 = self._terms(x, sigma, class_labels)
        _, mu, _, ucat, _, _ = self._params(xf.dtype, x.device)
        a = torch.softmax(logits, dim=1).to(xf.dtype) / c  # [B, K]
        low = (a[:, :, None] * shrink * p).reshape(xf.shape[0], -1) @ ucat.T
        out = xf - s2[:, None] * (a.sum(1, keepdim=True) * xf - a @ mu - low)
        return out.reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0, class_labels: Tensor | None = None) -> Tensor:
        """log p(x; sigma) per sample ``[B]`` (sigma = 0: the data density itself)."""
        logits = self._terms(x, sigma, class_labels)[0]
        return self._class_prior_correction(torch.logsumexp(logits, dim=1).to(acc_dtype(x.dtype)), class_labels)

    def _from_standard(self, comp: Tensor, z: Tensor) -> Tensor:
        u, lam, f = self.bases[comp], self.evals[comp], self.floor[comp]
        rf = f.sqrt()
        gain = (lam + f[:, None]).sqrt() - rf[:, None]  # C^{1/2} = sqrt(f) I + U diag(sqrt(lam + f) - sqrt(f)) U^T
        return self.means[comp] + rf[:, None] * z + torch.einsum("bdr,br->bd", u, gain * torch.einsum("bdr,bd->br", u, z))

    # ------------------------------------------------------------------ closed form (K = 1)
    def ode_solution(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact probability-flow ODE solution for a single component (K = 1):
        x(sigma_to) - mu = (C + sigma_to^2 I)^{1/2} (C + sigma_from^2 I)^{-1/2} (x(sigma_from) - mu)."""
        if self.num_components != 1:
            raise ValueError("ode_solution is closed-form only for a single component (K = 1)")
        xf = self._flat(x).to(torch.float64)
        mu, lam, u, f = self.means[0], self.evals[0], self.bases[0], float(self.floor[0])
        iso = math.sqrt((f + sigma_to**2) / (f + sigma_from**2))
        ratio = ((lam + f + sigma_to**2) / (lam + f + sigma_from**2)).sqrt()
        y = xf - mu
        out = mu + iso * y + ((y @ u) * (ratio - iso)) @ u.T
        return out.reshape(x.shape).to(x.dtype)
