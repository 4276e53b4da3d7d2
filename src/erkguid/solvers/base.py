"""The solver contract: a step is a pure function over a denoiser and a sigma grid.

``step(ctx, i, x, carry) -> StepOut`` advances ``x`` from ``ctx.sigmas[i]`` to
``ctx.sigmas[i + 1]``. It returns the proposal, the denoised estimate at the step's start (for
callbacks), an explicit carry for the next step (history, buffered Euler points; no hidden
state) and, when it has one, the embedded :class:`~erkguid.correction.ErkPair` that the shared
ERK-Guid correction consumes. Steps never apply the correction, never draw noise of their own
(``ctx.noise``) and never print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from torch import Tensor

from ..correction import ErkPair


class Denoise(Protocol):
    """The loop's denoiser: ``denoise(x, sigma)`` with a scalar sigma, returns D(x; sigma)."""

    def __call__(self, x: Tensor, sigma: float) -> Tensor: ...


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides the state.

    Attributes:
        denoise: counted, validated denoiser taking a scalar sigma (broadcast per sample).
        sigmas: the full float64 grid ending in 0.
        noise: ``noise(like)`` -> standard normal tensor shaped like ``like`` drawn from
            per-sample generators (a sample's noise depends only on its seed); ``None`` for
            deterministic sampling.
        want_pair: whether anything consumes the embedded pair (ERK-Guid, a callback); a step
            may then skip buffering states that only the pair needs (plain Heun keeps no
            Euler point), so the plain solver carries no extra memory.
        reduce_pair: only ERK-Guid reads the pair (no callback): a step may return
            :meth:`ErkPair.reduce` and release its partner at once (same correction, less memory).
    """

    denoise: Denoise
    sigmas: Tensor
    noise: Callable[[Tensor], Tensor] | None = None
    want_pair: bool = True
    reduce_pair: bool = False

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])


class StepOut(NamedTuple):
    x: Tensor  # proposal for x_{i+1}, before any correction
    denoised: Tensor  # D(x_i; sigma_i)
    carry: Any  # explicit state handed to step i+1
    pair: ErkPair | None = None  # embedded pair for ERK-Guid (Table 9), if any


StepFn = Callable[..., StepOut]


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The probability-flow drift dx/dsigma = (x - D(x; sigma)) / sigma (Eq. 1)."""
    return (x - denoised) / sigma


@dataclass(frozen=True)
class Solver:
    """A named solver: its step function, declared order and cost per step.

    Attributes:
        name: registry key used by ``sample(..., solver=name)``.
        step: the step function.
        order: declared convergence order (tested empirically).
        nfe: ``nfe(num_steps) -> int`` network evaluations for a grid of ``num_steps`` steps.
        options: allowed keyword options of ``step`` (``solver_options``) with their defaults.
        doc: one line for ``erkguid solvers``.
        prepare: optional ``prepare(options, sigmas) -> options`` run once per ``sample`` call, before
            the first step (e.g. to load and validate learned coefficients against the grid).
    """

    name: str
    step: StepFn
    order: int
    nfe: Callable[[int], int]
    options: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    prepare: Callable[[dict[str, Any], Tensor], dict[str, Any]] | None = None


SOLVERS: dict[str, Solver] = {}


def register(solver: Solver) -> Solver:
    """Add a solver to the registry (names are unique)."""
    if solver.name in SOLVERS:
        raise ValueError(f"a solver named {solver.name!r} is already registered")
    SOLVERS[solver.name] = solver
    return solver


def get_solver(solver: str | Solver) -> Solver:
    """Resolve a solver name (or pass a :class:`Solver` through)."""
    if isinstance(solver, Solver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
    return SOLVERS[solver]
