"""Solvers: each a short step function registered under a name (see :mod:`.base`)."""

from .adasde import adasde_step, adasde_update
from .adasde_coeffs import AdaSDECoefficients
from .base import SOLVERS, Solver, StepContext, StepFn, StepOut, get_solver, register, to_d
from .euler import euler_step
from .heun import HeunCarry, heun_step

__all__ = [
    "AdaSDECoefficients",
    "SOLVERS",
    "HeunCarry",
    "Solver",
    "StepContext",
    "StepFn",
    "StepOut",
    "adasde_step",
    "adasde_update",
    "euler_step",
    "get_solver",
    "heun_step",
    "register",
    "to_d",
]
