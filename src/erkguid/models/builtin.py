"""Built-in exact-score models: the 2-D tree, the 64-D digits mixture, the photograph-patch mixtures and an isotropic
Gaussian."""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from .gmm import GaussianMixture
from .lowrank import LowRankMixture


def tree_2d(depth: int = 5, width: float = 0.018) -> GaussianMixture:
    """A 2-D branching 'tree' of narrow, elongated Gaussians (two classes: left/right crown).

    In the spirit of the Autoguidance toy (Karras et al. 2024) and Fig. 1 of the ERK-Guid paper:
    every branch segment carries three components elongated along the segment and very narrow
    across it, so the probability-flow ODE is stiff in the gaps between diverging branches.
    The trunk belongs to both classes (it is listed once per class at half weight).
    """
    means, covs, weights, labels = [], [], [], []

    def add(p: np.ndarray, q: np.ndarray, level: int, label: int, w: float) -> None:
        seg = q - p
        length = float(np.linalg.norm(seg))
        u = seg / length
        n = np.array([-u[1], u[0]])
        along, across = length / 5.0, width * 0.8**level
        cov = along**2 * np.outer(u, u) + across**2 * np.outer(n, n)
        for t in (1 / 6, 1 / 2, 5 / 6):
            means.append(p + t * seg)
            covs.append(cov)
            weights.append(w * length * 0.9**level / 3)
            labels.append(label)

    def grow(p: np.ndarray, angle: float, length: float, level: int, label: int | None) -> None:
        q = p + length * np.array([math.cos(angle), math.sin(angle)])
        if label is None:  # trunk: both classes
            add(p, q, level, 0, 0.5)
            add(p, q, level, 1, 0.5)
        else:
            add(p, q, level, label, 1.0)
        if level < depth:
            spread = 0.55 * 0.85**level
            grow(q, angle + spread, 0.68 * length, level + 1, 0 if label is None else label)
            grow(q, angle - spread, 0.68 * length, level + 1, 1 if label is None else label)

    grow(np.array([0.0, -1.1]), math.pi / 2, 0.7, 0, None)
    return GaussianMixture(
        torch.tensor(np.array(weights)), torch.tensor(np.array(means)), torch.tensor(np.array(covs)),
        labels=torch.tensor(labels), name="tree2d",
    )


def digits_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits scaled to [-1, 1] (v / 8 - 1): ``(x [1797, 64], labels [1797])``.

    The data behind :func:`digits_64d`, the shipped learned digits models and their feature metrics;
    needs scikit-learn (``pip install 'erkguid[train]'``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'erkguid[train]'") from e
    d = load_digits()
    return torch.tensor(d.data / 8.0 - 1.0, dtype=dtype), torch.tensor(d.target, dtype=torch.long)


def digits_64d(image_shape: bool = False) -> GaussianMixture:
    """A 64-D mixture fitted to scikit-learn's 8x8 digits (values in [-1, 1]); 10 classes.

    Parameters ship with the package (``data/digits_gmm.npz``, made by
    ``scripts/fit_digits_gmm.py``: two full-covariance components per class). With
    ``image_shape=True`` states are ``[B, 1, 8, 8]`` instead of ``[B, 64]``.
    """
    with resources.files("erkguid.data").joinpath("digits_gmm.npz").open("rb") as fh:
        z = np.load(fh, allow_pickle=False)
        w, mu, cov, lab = (torch.tensor(z[k]) for k in ("weights", "means", "covs", "labels"))
    return GaussianMixture(w, mu.double(), cov.double(), labels=lab, shape=(1, 8, 8) if image_shape else None, name="digits64")


def isotropic_gaussian(dim: int = 16, std: float = 0.5, mean: float = 0.0) -> GaussianMixture:
    """N(mean, std^2 I): its probability-flow ODE has the closed form of ``ode_solution``."""
    if dim < 1 or std <= 0:
        raise ValueError("dim must be >= 1 and std > 0")
    return GaussianMixture(
        [1.0], torch.full((1, dim), float(mean)), torch.full((1, dim), float(std) ** 2), name=f"gauss{dim}"
    )


PATCH_FILES = {"patches16": "patches16_gmm.npz", "patches32": "patches32_gmm.npz"}


def patch_mixture(name: str = "patches16") -> LowRankMixture:
    """A mixture fitted to grayscale patches of scikit-image's CC0 / public-domain photographs (values in [-1, 1]).

    ``patches16``: 16x16 patches (d = 256), 32 components of rank 32; ``patches32``: 32x32 (d = 1024), 32
    components of rank 48. Each component is N(mu_k, A_k A_k^T + floor_k I) (:class:`LowRankMixture`); the
    float32 parameters in ``data/<name>_gmm.npz`` (made by ``scripts/fit_patch_gmm.py``; sources and
    licences in ``data/PATCHES.md``) define the model, evaluated in float64. States are ``[B, 1, s, s]``.
    """
    if name not in PATCH_FILES:
        raise ValueError(f"name must be one of {sorted(PATCH_FILES)}, got {name!r}")
    with resources.files("erkguid.data").joinpath(PATCH_FILES[name]).open("rb") as fh:
        z = np.load(fh, allow_pickle=False)
        arrays = {k: torch.tensor(z[k]) for k in ("weights", "means", "factors", "floor", "shape")}
    return LowRankMixture(arrays["weights"], arrays["means"].double(), arrays["factors"].double(), arrays["floor"].double(),
                          shape=tuple(int(v) for v in arrays["shape"]), name=name)


def texture_classes(model: LowRankMixture, num_classes: int = 4) -> Tensor:
    """Component class labels ``[K]`` for a class-conditional patch mixture: components sorted by total variance
    tr C_k (flat to textured patches, the axis along which stiffness differs, docs/patches.md) and cut at the
    ``num_classes``-quantiles of the prior mass (a component goes to the class its mass midpoint falls in), so that
    classes are as equally probable as whole components allow. Every class must get a component."""
    if not 1 <= num_classes <= model.num_components:
        raise ValueError(f"num_classes must be in 1..{model.num_components}, got {num_classes!r}")
    order = (model.evals.sum(1) + model.dim * model.floor).argsort()
    w = model.weights[order]
    mid = w.cumsum(0) - w / 2
    labels = torch.empty(model.num_components, dtype=torch.long)
    labels[order] = (mid * num_classes).floor().long().clamp(max=num_classes - 1)
    if labels.unique().numel() != num_classes:
        raise ValueError(f"{model.name}: a component carries more than one class's mass; use fewer than {num_classes} classes")
    return labels


def patch_classes(name: str = "patches16", num_classes: int = 4) -> LowRankMixture:
    """:func:`patch_mixture` with :func:`texture_classes` labels (the paper suite's class-conditional patch target)."""
    m = patch_mixture(name)
    return m.with_labels(texture_classes(m, num_classes), f"{name}-classes")


def patches_16() -> LowRankMixture:
    """:func:`patch_mixture` ``("patches16")``: 16x16 photograph patches, d = 256."""
    return patch_mixture("patches16")


def patches_32() -> LowRankMixture:
    """:func:`patch_mixture` ``("patches32")``: 32x32 photograph patches, d = 1024."""
    return patch_mixture("patches32")


MODELS: dict[str, Callable[[], GaussianMixture | LowRankMixture]] = {
    "tree2d": tree_2d, "digits64": digits_64d, "gauss": isotropic_gaussian, "patches16": patches_16, "patches32": patches_32,
}


def get_model(name: str) -> GaussianMixture | LowRankMixture:
    """A built-in exact model by name: ``tree2d``, ``digits64``, ``gauss``, ``patches16`` or ``patches32``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]()
