"""erkguid: stiffness-aware diffusion sampling with Embedded Runge-Kutta Guidance (ERK-Guid).

Kong, Lee, Hong & Kim, "Error as Signal: Stiffness-Aware Diffusion Sampling via Embedded
Runge-Kutta Guidance", ICLR 2026.
"""

from .correction import SCALINGS, Correction, ErkPair, Estimate, alpha, erk_guid, estimate
from .models import GaussianMixture, digits_64d, get_model, isotropic_gaussian, tree_2d
from .noise import PerSampleNoise, randn_from_seeds
from .reference import ReferenceResult, check_reference, reference_solve
from .sampling import NonFiniteError, Trace, sample
from .schedules import check_sigmas, edm_sigmas, get_sigmas, logsnr_sigmas, vp_time_uniform_sigmas
from .solvers import (
    SOLVERS,
    AdaptiveResult,
    AdaSDECoefficients,
    Solver,
    StepContext,
    StepOut,
    adaptive_heun,
    get_solver,
    register,
)

__version__ = "0.1.0"

__all__ = [
    "AdaSDECoefficients",
    "SCALINGS",
    "SOLVERS",
    "AdaptiveResult",
    "adaptive_heun",
    "Correction",
    "ErkPair",
    "Estimate",
    "GaussianMixture",
    "NonFiniteError",
    "PerSampleNoise",
    "ReferenceResult",
    "Solver",
    "StepContext",
    "StepOut",
    "Trace",
    "__version__",
    "alpha",
    "check_reference",
    "check_sigmas",
    "digits_64d",
    "edm_sigmas",
    "erk_guid",
    "estimate",
    "get_model",
    "get_sigmas",
    "get_solver",
    "isotropic_gaussian",
    "logsnr_sigmas",
    "randn_from_seeds",
    "reference_solve",
    "register",
    "sample",
    "tree_2d",
    "vp_time_uniform_sigmas",
]
