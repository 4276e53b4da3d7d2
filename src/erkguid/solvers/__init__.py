"""Solvers: each a short step function registered under a name (see :mod:`.base`)."""

from .base import SOLVERS, Solver, StepContext, StepFn, StepOut, get_solver, register, to_d
from .euler import euler_step
from .heun import HeunCarry, heun_step

__all__ = [
    "SOLVERS",
    "HeunCarry",
    "Solver",
    "StepContext",
    "StepFn",
    "StepOut",
    "euler_step",
    "get_solver",
    "heun_step",
    "register",
    "to_d",
]
