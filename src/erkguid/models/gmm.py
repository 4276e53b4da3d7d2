"""Gaussian mixtures with exact denoisers: the embedded default models (no downloads).

For p_data = sum_k pi_k N(mu_k, S_k), the noisy density is p(x; sigma) = sum_k pi_k
N(x; mu_k, S_k + sigma^2 I) and the exact denoiser (posterior mean) is

    D(x; sigma) = sum_k w_k(x) [mu_k + S_k (S_k + sigma^2 I)^{-1} (x - mu_k)],

with w_k(x) the component posteriors under N(mu_k, S_k + sigma^2 I). Each S_k is
eigendecomposed once, so every evaluation costs O(B K d^2) and accepts a per-sample sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._batch import acc_dtype, sigma_vector
from ._mixture import MixtureBase


class GaussianMixture(MixtureBase):
    """A Gaussian mixture in ``d`` dimensions with exact D(x; sigma), log-density and sampling.

    Args:
        weights: ``[K]`` non-negative mixture weights (normalised here).
        means: ``[K, d]``.
        covs: ``[K, d, d]`` symmetric positive semi-definite covariances, or ``[K, d]`` diagonals.
        labels: optional ``[K]`` integer class of each component (for class-conditional use).
        shape: per-sample shape of states (default ``(d,)``; e.g. ``(1, 8, 8)`` for images).
        name: a short name for tables.
    """

    def __init__(
        self,
        weights: Tensor | Sequence[float],
        means: Tensor,
        covs: Tensor,
        labels: Tensor | Sequence[int] | None = None,
        shape: Sequence[int] | None = None,
        name: str = "gmm",
    ) -> None:
        k, d = self._init_mixture(weights, means, labels, shape, name)
        cov = torch.as_tensor(covs, dtype=torch.float64)
        if cov.shape == (k, d):
            cov = torch.diag_embed(cov)
        if cov.shape != (k, d, d):
            raise ValueError(f"covs must be [K, d, d] or [K, d]; got {tuple(cov.shape)} for K={k}, d={d}")
        cov = 0.5 * (cov + cov.transpose(1, 2))
        evals, evecs = torch.linalg.eigh(cov)
        if (evals < -1e-10 * evals.abs().max()).any():
            raise ValueError("covs must be positive semi-definite")
        self.covs = cov
        self.evals = evals.clamp_min(0.0)
        self.evecs = evecs  # columns are eigenvectors: S_k = U_k diag(evals_k) U_k^T
        # The symmetric square root S_k^{1/2} = U_k diag(sqrt(evals_k)) U_k^T is unique, whatever basis (and signs)
        # LAPACK picks inside a repeated eigenvalue's eigenspace; sampling uses it, never U_k itself.
        root = torch.einsum("kde,ke,kfe->kdf", evecs, self.evals.sqrt(), evecs)
        self.sqrt_covs = 0.5 * (root + root.transpose(1, 2))

    # ------------------------------------------------------------------ basics
    @property
    def sigma_data(self) -> float:
        """Root-mean-square standard deviation per coordinate of p_data."""
        mean = (self.weights[:, None] * self.means).sum(0)
        within = (self.weights * self.evals.mean(1)).sum()
        between = (self.weights * ((self.means - mean) ** 2).mean(1)).sum()
        return float((within + between).sqrt())

    def _params(self, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = tuple(
                t.to(device, dtype) for t in (self.weights.log(), self.means, self.evals, self.evecs)
            )
        return self._cache[key]

    def _posterior_terms(
        self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (log w_k unnormalised [B,K], y = U^T (x - mu) [B,K,d], var [B,K,d], evals)."""
        dt = acc_dtype(x.dtype)
        xf = self._flat(x).to(dt)
        logpi, mu, lam, u = self._params(dt, x.device)
        s2 = sigma_vector(sigma, xf, dtype=dt) ** 2
        y = torch.einsum("bkd,kde->bke", xf[:, None, :] - mu[None], u)
        var = lam[None] + s2[:, None, None]
        logits = logpi[None] - 0.5 * ((y * y / var).sum(-1) + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        return self._class_mask(logits, class_labels), y, var, lam

    # ------------------------------------------------------------------ exact quantities
    def denoise(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """Exact D(x; sigma) = E[x_0 | x_sigma = x], per-sample sigma; output in x's dtype."""
        logits, y, var, lam = self._posterior_terms(x, sigma, class_labels)
        _, mu, _, u = self._params(y.dtype, x.device)
        w = torch.softmax(logits, dim=1)
        shrunk = y * (lam[None] / var)  # eigen-coordinates of S (S + s^2 I)^{-1} (x - mu)
        dk = mu[None] + torch.einsum("bke,kde->bkd", shrunk, u)
        return (w[:, :, None] * dk).sum(1).reshape(x.shape).to(x.dtype)

    __call__ = denoise

    def log_prob(self, x: Tensor, sigma: Tensor | float = 0.0, class_labels: Tensor | None = None) -> Tensor:
        """log p(x; sigma) per sample ``[B]`` (sigma = 0: the data density itself)."""
        logits, _, _, _ = self._posterior_terms(x, sigma, class_labels)
        return self._class_prior_correction(torch.logsumexp(logits, dim=1), class_labels)

    def _from_standard(self, comp: Tensor, z: Tensor) -> Tensor:
        return self.means[comp] + torch.einsum("bde,be->bd", self.sqrt_covs[comp], z)

    # ------------------------------------------------------------------ derived models
    def subset(self, components: Tensor | Sequence[int], name: str | None = None) -> GaussianMixture:
        """The mixture restricted to some components (weights renormalised)."""
        idx = torch.as_tensor(components, dtype=torch.long)
        return GaussianMixture(
            self.weights[idx], self.means[idx], self.covs[idx],
            None if self.labels is None else self.labels[idx], self.shape, name or self.name,
        )

    def for_class(self, label: int) -> GaussianMixture:
        """The class-conditional mixture p_data(x | c = label)."""
        if self.labels is None:
            raise ValueError("this mixture has no component labels")
        return self.subset((self.labels == label).nonzero().flatten(), f"{self.name}[c={label}]")

    def broadened(self, factor: float, extra_var: float = 0.0, name: str | None = None) -> GaussianMixture:
        """A 'weaker' model: every covariance scaled by ``factor`` plus ``extra_var`` I (autoguidance toy)."""
        if factor <= 0 or extra_var < 0:
            raise ValueError("factor must be > 0 and extra_var >= 0")
        cov = self.covs * factor + extra_var * torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, self.means, cov, self.labels, self.shape, name or f"{self.name}-broad")

    # ------------------------------------------------------------------ closed form (K = 1)
    def ode_solution(self, x: Tensor, sigma_from: float, sigma_to: float) -> Tensor:
        """Exact probability-flow ODE solution for a single Gaussian (K = 1).

        With S = U diag(lam) U^T: x(sigma_to) - mu = U diag(sqrt((lam + sigma_to^2) /
        (lam + sigma_from^2))) U^T (x(sigma_from) - mu).
        """
        if self.num_components != 1:
            raise ValueError("ode_solution is closed-form only for a single Gaussian (K = 1)")
        xf = self._flat(x).to(torch.float64)
        mu, lam, u = self.means[0].to(x.device), self.evals[0].to(x.device), self.evecs[0].to(x.device)
        ratio = ((lam + sigma_to**2) / (lam + sigma_from**2)).sqrt()
        out = mu + ((xf - mu) @ u * ratio) @ u.T
        return out.reshape(x.shape).to(x.dtype)
