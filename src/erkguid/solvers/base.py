"""The solver contract: a step is a pure function over a denoiser and a sigma grid.

``step(ctx, i, x, carry, **options) -> StepOut`` advances ``x`` from ``ctx.sigmas[i]`` to
``ctx.sigmas[i + 1]``. It returns the proposal, the denoised estimate at the step's start (for
callbacks), an explicit carry for the next step (history, buffered Euler points; no hidden
state) and, when it has one, the embedded :class:`~erkguid.correction.ErkPair` that the shared
ERK-Guid correction consumes. Steps never apply the correction, never draw noise of their own
(``ctx.noise``) and never print. A step always advances from the ``x`` it is given (the engine may
have corrected it); it never reconstructs the state from its carry.

Options are written once: as keyword-only parameters with defaults of the step function
(:attr:`Solver.options` is read from that signature). Work that depends only on the grid and the
options (coefficients, validation) runs once per run in ``setup(sigmas, options) -> plan``; the
step reads the result as ``ctx.plan``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from torch import Tensor

from ..correction import ErkPair


class Denoise(Protocol):
    """The engine's denoiser: ``denoise(x, sigma)`` with a scalar sigma, returns D(x; sigma)."""

    def __call__(self, x: Tensor, sigma: float, /) -> Tensor: ...


@dataclass(frozen=True)
class StepContext:
    """What a step may use besides the state.

    Attributes:
        denoise: counted, validated denoiser taking a scalar sigma (broadcast per sample).
        sigmas: the full float64 grid of the run (ending in 0 or at a positive level).
        noise: ``noise(like)`` -> standard normal tensor shaped like ``like`` drawn from
            per-sample generators (a sample's noise depends only on its seed); ``None`` for
            deterministic sampling.
        want_pair: whether anything consumes the embedded pair (ERK-Guid, a callback, a
            continuation); a step may then skip buffering states that only the pair needs (plain
            Heun keeps no Euler point), so the plain solver carries no extra memory.
        reduce_pair: only ERK-Guid reads the pair (no callback, no continuation): a step may return
            :meth:`ErkPair.reduce` and release its partner at once (same correction, less memory).
        plan: what the solver's ``setup`` returned for this run (``None`` without a setup hook).
    """

    denoise: Denoise
    sigmas: Tensor
    noise: Callable[[Tensor], Tensor] | None = None
    want_pair: bool = True
    reduce_pair: bool = False
    plan: Any = None
    levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.levels:  # host copy of the grid: reading a level never touches a tensor
            object.__setattr__(self, "levels", tuple(float(s) for s in self.sigmas.tolist()))

    def sigma(self, i: int) -> float:
        return self.levels[i]


class StepOut(NamedTuple):
    x: Tensor  # proposal for x_{i+1}, before any correction
    denoised: Tensor  # D(x_i; sigma_i)
    carry: Any  # explicit state handed to step i+1
    pair: ErkPair | None = None  # embedded pair for ERK-Guid (Table 9), if any


StepFn = Callable[..., StepOut]
SetupFn = Callable[[Tensor, Mapping[str, Any]], Any]


def to_d(x: Tensor, sigma: float, denoised: Tensor) -> Tensor:
    """The probability-flow drift dx/dsigma = (x - D(x; sigma)) / sigma (Eq. 1)."""
    return (x - denoised) / sigma


def _step_options(step: StepFn) -> dict[str, Any]:
    """The keyword-only parameters of a step function with their defaults (the solver's options)."""
    out = {}
    for p in inspect.signature(step).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            if p.default is inspect.Parameter.empty:
                raise ValueError(f"solver option {p.name!r} of {step.__name__} needs a default")
            out[p.name] = p.default
    return out


@dataclass(frozen=True)
class Solver:
    """A named solver: its step function, declared order and cost.

    Attributes:
        name: registry key used by ``sample(..., solver=name)``.
        step: the step function; its keyword-only parameters (with defaults) are the options.
        order: declared convergence order (tested empirically).
        nfe: network evaluations per sample, ``nfe(num_steps, options, to_zero)`` for a grid of
            ``num_steps`` steps ending in 0 (``to_zero``) or at a positive level, given the run's full
            options (defaults filled in); exact for every option combination (tested against the
            engine's count). A one-argument ``nfe(num_steps)`` (grids ending in 0) is accepted. After
            construction ``solver.nfe(num_steps, options=None, *, to_zero=True)`` fills the defaults in.
        options: read from the step's keyword-only parameters; passing it is optional and must agree.
        doc: one line for ``erkguid solvers``.
        setup: optional ``setup(sigmas, options) -> plan``, run once per run before the first step
            (option validation, coefficients); steps read the plan as ``ctx.plan``.
        prepare: the earlier form of the per-run hook, ``prepare(options, sigmas) -> options`` (still run once
            per run, before ``setup``); prefer ``setup``.
    """

    name: str
    step: StepFn
    order: int
    nfe: Callable[..., int]
    options: dict[str, Any] | None = None
    doc: str = ""
    setup: SetupFn | None = None
    prepare: Callable[[dict[str, Any], Tensor], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        derived = _step_options(self.step)
        if self.options is not None and any(derived.get(k, v) != v for k, v in self.options.items()):
            raise ValueError(f"solver {self.name!r}: options {self.options} disagree with the step's defaults {derived}")
        object.__setattr__(self, "options", {**(self.options or {}), **derived})
        raw = self.nfe
        legacy = len(inspect.signature(raw).parameters) == 1

        def nfe(num_steps: int, options: Mapping[str, Any] | None = None, to_zero: bool = True) -> int:
            if legacy:
                if not to_zero:
                    raise ValueError(f"solver {self.name!r} declares nfe(num_steps) only for grids that end in 0")
                return int(raw(int(num_steps)))
            return int(raw(int(num_steps), self.resolve(options), to_zero))

        object.__setattr__(self, "nfe", nfe)

    def resolve(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's options: the step's defaults updated with ``options``; unknown names raise."""
        allowed = self.options or {}
        given = dict(options or {})
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"solver_options {unknown} not accepted by solver {self.name!r}; allowed: {sorted(allowed)}")
        return {**allowed, **given}

    def plan(self, sigmas: Tensor, options: Mapping[str, Any] | None = None) -> Any:
        """Run the ``setup`` hook (once per run) on the run's grid and full options."""
        return None if self.setup is None else self.setup(sigmas, self.resolve(options))


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
