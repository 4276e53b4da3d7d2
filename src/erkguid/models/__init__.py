"""Exact-score models (Gaussian mixtures) used as defaults, test beds and references."""

from .builtin import MODELS, digits_64d, digits_data, get_model, isotropic_gaussian, patch_mixture, tree_2d
from .conditional import ConditionalMixture
from .gmm import GaussianMixture
from .lowrank import LowRankMixture

__all__ = ["MODELS", "ConditionalMixture", "GaussianMixture", "LowRankMixture", "digits_64d", "digits_data", "get_model",
           "isotropic_gaussian", "patch_mixture", "tree_2d"]
