"""What every exact-score mixture shares (dense :class:`GaussianMixture`, low-rank :class:`LowRankMixture`):
weights, means, optional component labels and the state shape, the class-conditional masks, the drift
and score from the exact denoiser (Eq. 1 / Tweedie), and the draw of components for sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._batch import append_dims, sigma_vector


class MixtureBase:
    """Weights ``[K]`` (normalised), means ``[K, d]``, labels ``[K]`` or None, ``shape``, ``name``; subclasses
    implement ``denoise`` (and their covariance model)."""

    weights: Tensor
    means: Tensor
    labels: Tensor | None
    shape: tuple[int, ...]
    name: str

    def _init_mixture(self, weights: Tensor | Sequence[float], means: Tensor, labels: Tensor | Sequence[int] | None,
                      shape: Sequence[int] | None, name: str) -> tuple[int, int]:
        """Check and store the shared fields; returns ``(K, d)``."""
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.ndim != 2 or w.numel() != mu.shape[0]:
            raise ValueError(f"means must be [K, d] with K = len(weights); got {tuple(mu.shape)} and K={w.numel()}")
        k, d = mu.shape
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.weights = w / w.sum()
        self.means = mu
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long).flatten()
        if self.labels is not None and self.labels.numel() != k:
            raise ValueError(f"labels must have one entry per component ({k}), got {self.labels.numel()}")
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} does not hold d={d} values")
        self.name = name
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}
        return k, d

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape and tuple(x.shape[1:]) != (self.dim,):
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.shape))}], got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def _component_labels(self) -> Tensor:
        if self.labels is None:
            raise ValueError("class_labels given but this mixture has no component labels")
        return self.labels

    def _class_mask(self, logits: Tensor, class_labels: Tensor | None) -> Tensor:
        """``logits [B, K]`` with the components of other classes than each sample's ``class_labels`` set to -inf."""
        if class_labels is None:
            return logits
        labels = self._component_labels()
        cl = torch.as_tensor(class_labels, device=logits.device).reshape(-1).long()
        if cl.numel() != logits.shape[0]:
            raise ValueError(f"class_labels must have one label per sample ({logits.shape[0]}), got {cl.numel()}")
        return logits.masked_fill(labels.to(logits.device)[None, :] != cl[:, None], float("-inf"))

    def _class_prior_correction(self, out: Tensor, class_labels: Tensor | None) -> Tensor:
        """``log p(x | c) = log p(x, c) - log p(c)``: renormalise a masked log-density by the class prior."""
        if class_labels is None:
            return out
        cl = torch.as_tensor(class_labels, device=out.device).reshape(-1).long()
        prior = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self._component_labels(), self.weights)
        return out - prior.to(out.device, out.dtype).log()[cl]

    def _draw_components(self, n: int, class_labels: Tensor | None, g: torch.Generator) -> Tensor:
        """``[n]`` component indices drawn from the weights (restricted to each sample's class) with ``g``."""
        logw = self._class_mask(self.weights.log().expand(n, -1).clone(), class_labels)
        return torch.multinomial(torch.softmax(logw, 1), 1, generator=g).squeeze(1)

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        sigma: float = 0.0,
        class_labels: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Exact samples of p(x; sigma) (sigma = 0: p_data), ``[n, *shape]``, from one seeded generator: components,
        then ``mu_k + C_k^{1/2} z`` with the symmetric square root (:meth:`_from_standard`), which does not depend on
        the eigenbasis LAPACK returns, so the samples are the same on every machine up to rounding; then sigma noise."""
        g = torch.Generator().manual_seed(seed)
        comp = self._draw_components(n, class_labels, g)
        z = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        x = self._from_standard(comp, z)
        if sigma > 0:
            x = x + sigma * torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return x.reshape((n,) + self.shape).to(dtype)

    def _from_standard(self, comp: Tensor, z: Tensor) -> Tensor:
        """``mu_k + C_k^{1/2} z`` per sample (component ``comp``, standard normal ``z``, ``[n, d]`` float64)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ from the exact denoiser
    def denoise(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def drift(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """Probability-flow drift f = (x - D(x; sigma)) / sigma (Eq. 1); sigma must be > 0."""
        s = append_dims(sigma_vector(sigma, x, dtype=x.dtype), x.ndim)
        return (x - self.denoise(x, sigma, class_labels)) / s

    def score(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """grad_x log p(x; sigma) = (D(x; sigma) - x) / sigma^2 (Tweedie); sigma must be > 0."""
        s = append_dims(sigma_vector(sigma, x, dtype=x.dtype), x.ndim)
        return (self.denoise(x, sigma, class_labels) - x) / s**2
