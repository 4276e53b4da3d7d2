"""erkguid: stiffness-aware diffusion sampling with Embedded Runge-Kutta Guidance (ERK-Guid).

Kong, Lee, Hong & Kim, "Error as Signal: Stiffness-Aware Diffusion Sampling via Embedded
Runge-Kutta Guidance", ICLR 2026.
"""

from . import integrations  # noqa: F401 - registers the lazy diffusers adapter (pipelines saved with ERK schedulers reload)
from ._validate import DivergenceError, ErkGuidWarning
from ._version import __version__
from .correction import SCALINGS, Correction, ErkPair, Estimate, alpha, erk_guid, estimate
from .engine import CHECK_FINITE, Run, State, Step
from .guidance import Counted, ErkProj, Guided, autoguidance, cfg
from .learned import LearnedDenoiser, learned_names, load_learned
from .models import ConditionalMixture, GaussianMixture, digits_64d, get_model, isotropic_gaussian, tree_2d
from .noise import PerSampleNoise, randn_from_seeds
from .recommend import recommended
from .reference import ReferenceResult, check_reference, reference_solve
from .resolve import Model, resolve_model
from .sampling import NonFiniteError, Trace, sample, sample_erk_proj
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
from .tune import load_preset

__all__ = [
    "CHECK_FINITE",
    "Run",
    "State",
    "Step",
    "AdaSDECoefficients",
    "SCALINGS",
    "SOLVERS",
    "AdaptiveResult",
    "ConditionalMixture",
    "adaptive_heun",
    "Correction",
    "Counted",
    "DivergenceError",
    "ErkProj",
    "ErkGuidWarning",
    "ErkPair",
    "Estimate",
    "GaussianMixture",
    "Guided",
    "LearnedDenoiser",
    "Model",
    "NonFiniteError",
    "PerSampleNoise",
    "ReferenceResult",
    "Solver",
    "StepContext",
    "StepOut",
    "Trace",
    "__version__",
    "alpha",
    "autoguidance",
    "cfg",
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
    "learned_names",
    "load_preset",
    "load_learned",
    "logsnr_sigmas",
    "randn_from_seeds",
    "recommended",
    "reference_solve",
    "resolve_model",
    "register",
    "sample",
    "sample_erk_proj",
    "tree_2d",
    "vp_time_uniform_sigmas",
]
