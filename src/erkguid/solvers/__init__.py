"""Solvers: each a short step function registered under a name (see :mod:`.base`)."""

from .adaptive import AdaptiveResult, adaptive_heun
from .adasde import adasde_step, adasde_update
from .adasde_coeffs import AdaSDECoefficients, shipped, shipped_for, shipped_names
from .base import SOLVERS, Solver, StepContext, StepFn, StepOut, get_solver, register, to_d
from .deis import deis_step
from .dpm2 import dpm2_step
from .dpmpp_2m import dpmpp_2m_step
from .dpmpp_3m import dpmpp_3m_step
from .euler import euler_step
from .heun import HeunCarry, heun_step
from .ipndm import ipndm_step
from .lms import lms_step
from .pc import heun_pc_step, langevin_correct
from .unipc import unipc_step

__all__ = [
    "AdaSDECoefficients",
    "SOLVERS",
    "AdaptiveResult",
    "adaptive_heun",
    "heun_pc_step",
    "langevin_correct",
    "HeunCarry",
    "Solver",
    "StepContext",
    "StepFn",
    "StepOut",
    "adasde_step",
    "adasde_update",
    "deis_step",
    "dpm2_step",
    "dpmpp_2m_step",
    "dpmpp_3m_step",
    "euler_step",
    "get_solver",
    "heun_step",
    "ipndm_step",
    "lms_step",
    "register",
    "to_d",
    "unipc_step",
    "shipped",
    "shipped_for",
    "shipped_names",
]
