"""Argument checks and the divergence guard of :func:`erkguid.sample`, written once.

Every check raises a ``TypeError`` (wrong kind of value) or a ``ValueError`` (right kind, bad value)
whose message names the argument. :class:`RunGuard` watches a run for blow-ups with one host
synchronisation per step and warns (:class:`ErkGuidWarning`) when ERK-Guid cannot act.

The divergence bound (docs/validation.md). For data inside a ball of radius ``R`` the exact denoiser
(the posterior mean) lies in that ball, and along the probability-flow ODE ``dx/dsigma = (x - D)/sigma``
(Eq. 1) the quantity ``(||x|| - R) / sigma`` cannot grow as sigma decreases, so
``||x(sigma)|| <= R + (sigma / sigma_0) ||x_0||``. With

    scale(sigma) = R_i + sigma * (||x_0|| / sigma_0 + sqrt(d)),   R_i = max_{j <= i} ||D(x_j; sigma_j)||

per sample (the running largest denoised norm stands in for ``R``; ``sqrt(d) sigma`` covers an ``x_0``
that is not scaled by ``sigma_0``), step ``i`` raises :class:`DivergenceError` when the new state
exceeds ``DIVERGENCE_FACTOR * scale(sigma_{i+1})`` or the ERK-Guid correction applied in it (a move
within the step) exceeds ``DIVERGENCE_FACTOR * scale(sigma_i)``. Over 14224 runs of every shipped
model and solver (``scripts/divergence_sweep.py``, docs/validation.md) every run ending beyond 1000x the
data's norm exceeded 100; of the runs ending within 2x the data's norm, two (2-step DPM-Solver-2 with
``w_stiff=2``, ``sat``, on the isotropic Gaussian) reached 105.9 and all others stayed at or below 35.6.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._batch import bnorm

DIVERGENCE_FACTOR = 100.0  # the measured margin is in docs/validation.md (scripts/divergence_sweep.py)
MAX_SIGMA = 1e10  # far inside float32 for sigma**2 (3.4e38); EDM uses 80, VP ~160, rectified flows ~1e3
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 <= seed < 2**64


def sweep(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a sweep that tries many ERK-Guid settings on purpose (bench, safe-erk, tune, the paper suite): an
    :class:`ErkGuidWarning` per run would be noise there, and their tables report the gated fraction instead."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ErkGuidWarning)
            return fn(*args, **kwargs)

    return wrapped


class ErkGuidWarning(UserWarning):
    """ERK-Guid was asked for but could not act (no embedded pair, or a gate that never opened)."""


class NonFiniteError(FloatingPointError):
    """The denoiser (or a step) produced NaN or Inf; the message names the step index."""


class DivergenceError(NonFiniteError, ValueError):
    """The state or an ERK-Guid correction grew far beyond what the step and sigma allow.

    The message names the setting that caused it (``w_stiff``/``w_con``/``scaling`` or ``solver``)
    and the step. A ``ValueError`` too: the remedy is a different argument.
    """


def _describe(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"[:120]


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_)) or (isinstance(v, (Tensor, np.ndarray)) and v.dtype in (torch.bool, np.bool_))


# --------------------------------------------------------------------------- numbers
def real_scalar(name: str, v: Any) -> float:
    """``v`` as a Python float: an int/float, a numpy real scalar or a 0-d real tensor; bools are refused."""
    if _is_bool(v):
        raise TypeError(f"{name} must be a number, got the bool {v!r} (write 1.0 or 0.0 if that is meant)")
    if isinstance(v, (Tensor, np.ndarray)):
        real = not v.is_complex() if isinstance(v, Tensor) else v.dtype.kind in "iuf"
        if v.ndim != 0 or not real:
            raise TypeError(f"{name} must be a real number or a 0-d real tensor, got {type(v).__name__} "
                            f"of shape {tuple(v.shape)} and dtype {v.dtype}")
        return float(v.item())
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError(f"{name} must be a real number, got {_describe(v)}")


def strength(name: str, v: Any) -> float:
    """An ERK-Guid strength (``w_stiff``, ``w_con``): a finite real number >= 0, returned as a float."""
    f = real_scalar(name, v)
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    return f


# --------------------------------------------------------------------------- sigmas
def _as_float64(sigmas: Any, name: str) -> Tensor:
    if isinstance(sigmas, Tensor):
        if sigmas.dtype == torch.bool or sigmas.is_complex():
            raise TypeError(f"{name} must hold real noise levels, got a tensor of dtype {sigmas.dtype}")
        return sigmas.detach().to("cpu", torch.float64)
    if isinstance(sigmas, np.ndarray):
        if sigmas.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real noise levels, got an array of dtype {sigmas.dtype}")
        return torch.from_numpy(np.ascontiguousarray(sigmas, dtype=np.float64))
    if sigmas is None or isinstance(sigmas, (str, bytes, Mapping)) or not isinstance(sigmas, Iterable):
        raise TypeError(f"{name} must be a 1-D sequence or tensor of noise levels (e.g. erkguid.edm_sigmas(18)), "
                        f"got {_describe(sigmas)}")
    try:
        arr = np.asarray(sigmas)
    except (ValueError, TypeError):  # ragged nesting
        arr = np.asarray(None)
    if arr.dtype.kind in "iuf":
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))  # Python floats stay float64 (1e300)
    return torch.tensor([real_scalar(f"{name}[{j}]", v) for j, v in enumerate(sigmas)], dtype=torch.float64)


def sigma_grid(sigmas: Any, name: str = "sigmas", allow_positive_end: bool = False) -> Tensor:
    """A user grid as a float64 CPU tensor: 1-D, at least 2 values, finite, at most ``MAX_SIGMA``,
    non-negative, strictly decreasing, ending in exactly 0 (or, with ``allow_positive_end``, at any level
    >= 0: k-diffusion's run that stops at sigma_min > 0). Each failure has its own message."""
    s = _as_float64(sigmas, name)
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 values, got shape {tuple(s.shape)}")
    for bad, what in ((s.isnan(), "NaN"), (s.isinf(), "infinite")):
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ValueError(f"{name} must be finite: {name}[{j}] is {what} ({s.tolist()[:8]})")
    if (s > MAX_SIGMA).any():
        j = int((s > MAX_SIGMA).nonzero()[0])
        raise ValueError(f"{name}[{j}]={float(s[j]):.6g} exceeds the largest supported noise level {MAX_SIGMA:g} "
                         "(sigma**2 would leave the range of float32 models; EDM uses 80)")
    if (s < 0).any():
        raise ValueError(f"{name} must be non-negative, got a negative value at index {int((s < 0).nonzero()[0])}")
    if s[-1] != 0 and not allow_positive_end:
        raise ValueError(f"{name} must end in 0 (k-diffusion convention), got last value {float(s[-1])}")
    bad = (s[1:] >= s[:-1]).nonzero()
    if bad.numel():
        j = int(bad[0])
        raise ValueError(
            f"{name} must be strictly decreasing: {name}[{j + 1}]={float(s[j + 1])} >= {name}[{j}]={float(s[j])}"
        )
    return s


# --------------------------------------------------------------------------- seeds
def seed_list(seeds: Any, name: str = "seeds") -> list[int]:
    """One integer seed per sample, ``0 <= seed < 2**64``: a 1-D sequence, integer array or tensor."""
    if isinstance(seeds, (Tensor, np.ndarray)):
        kind_ok = (not seeds.dtype.is_floating_point and not seeds.dtype.is_complex and seeds.dtype != torch.bool
                   if isinstance(seeds, Tensor) else seeds.dtype.kind in "iu")
        if not kind_ok:
            raise TypeError(f"{name} must hold integers, got {type(seeds).__name__} of dtype {seeds.dtype}")
        if seeds.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one seed per sample), got shape {tuple(seeds.shape)}")
        values = [int(s) for s in seeds.tolist()]
    else:
        if seeds is None or isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Iterable):
            raise TypeError(f"{name} must be a sequence of one integer per sample, got {_describe(seeds)}")
        values = []
        for j, s in enumerate(seeds):
            if _is_bool(s) or not isinstance(s, (numbers.Integral, np.integer)):
                raise TypeError(f"{name}[{j}] must be an integer, got {_describe(s)}")
            values.append(int(s))
    if not values:
        raise ValueError(f"{name} must hold at least one seed")
    bad = [s for s in values if not 0 <= s < SEED_LIMIT]
    if bad:
        raise ValueError(f"{name} must be integers in [0, 2**64), got {bad[0]}")
    return values


# --------------------------------------------------------------------------- callables and options
def check_callable(name: str, fn: Any, optional: bool = False) -> None:
    """Raise a TypeError naming ``name`` unless ``fn`` is callable (or None when ``optional``)."""
    if not (callable(fn) or (optional and fn is None)):
        raise TypeError(f"{name} must be callable{' or None' if optional else ''}, got {_describe(fn)}")


def check_solver_arg(solver: Any) -> None:
    """``solver`` is a registered name (str) or a :class:`~erkguid.solvers.Solver`."""
    from .solvers.base import Solver  # noqa: PLC0415 (the solvers import this module's package)

    if not isinstance(solver, (str, Solver)):
        raise TypeError(f"solver must be a solver name (str) or a Solver, got {_describe(solver)}")


def option_value(solver: str, key: str, default: Any, value: Any) -> Any:
    """Check one solver option against its declared type: the type of its default in ``Solver.options``.

    bool default -> a bool; int default -> an int (not a float, not a bool); float default -> a finite
    real number; a ``None`` default is not typed here (the solver's ``prepare`` hook checks it).
    """
    where = f"solver_options[{key!r}] of solver {solver!r}"
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where} must be a bool (True/False), got {_describe(value)}")
        return bool(value)
    if isinstance(default, int):
        if _is_bool(value) or not isinstance(value, (numbers.Integral, np.integer)):
            raise TypeError(f"{where} must be an int, got {_describe(value)}")
        return int(value)
    if isinstance(default, float):
        f = real_scalar(where, value)
        if not math.isfinite(f):
            raise ValueError(f"{where} must be finite, got {value!r}")
        return f
    return value


def solver_options(solver: Any, options: Any) -> dict[str, Any]:
    """``solver_options`` as a dict of typed values, checked against ``solver.options`` (names and types)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"solver_options must be a mapping of option name -> value, got {_describe(options)}")
    bad_keys = [k for k in options if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"solver_options keys must be option names (str), got {bad_keys[0]!r}")
    unknown = sorted(set(options) - set(solver.options))
    if unknown:
        raise ValueError(f"solver_options {unknown} not accepted by solver {solver.name!r}; allowed: {sorted(solver.options)}")
    return {k: option_value(solver.name, k, solver.options[k], v) for k, v in options.items()}


# --------------------------------------------------------------------------- the denoiser's output
def check_denoised_type(out: Any, x: Tensor, sigma: float | Tensor, step: int) -> None:
    """The denoiser's output must be a floating tensor shaped like ``x`` on ``x``'s device (no host sync)."""
    if isinstance(out, Tensor) and out.shape == x.shape and out.is_floating_point() and out.device == x.device:
        return
    at = f"at step {step} (sigma={float(sigma.detach() if isinstance(sigma, Tensor) else sigma):.6g})"
    if not isinstance(out, Tensor):
        raise TypeError(f"denoiser returned {type(out).__name__} {at}; it must return a tensor D(x; sigma) shaped like x")
    if out.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)} {at}; "
                         "it must return D(x; sigma) with the shape of x")
    if not out.is_floating_point():
        raise TypeError(f"denoiser returned a tensor of dtype {out.dtype} {at}; it must return a floating-point tensor")
    if out.device != x.device:
        raise ValueError(f"denoiser returned a tensor on device {out.device} for input on {x.device} {at}; "
                         "it must return D(x; sigma) on the device of x")


# --------------------------------------------------------------------------- the run guard
class RunGuard:
    """Per-step divergence check and end-of-run ERK-Guid warnings for one ``sample`` call.

    ``check`` is called once per step, after the correction; it adds two per-sample norms to what the
    step computed and synchronises with the host once. See the module docstring for the bound. NaN/Inf
    always raises; the size limits apply to the ERK-Guid correction and, once a correction has been
    applied, to the state (a plain solver's inaccurate but finite result is its own). ``factor=math.inf``
    keeps only the NaN/Inf check (``sample(..., check_divergence=False)``).
    """

    def __init__(self, x0: Tensor, grid: Tensor, solver: str, w_stiff: float, w_con: float, scaling: str,
                 factor: float | None = None, start: int = 0) -> None:
        self.grid, self.solver = grid, solver
        self.levels = [float(v) for v in grid.tolist()]  # host floats: reading a level never syncs
        self.factor = DIVERGENCE_FACTOR if factor is None else factor
        self.w_stiff, self.w_con, self.scaling = w_stiff, w_con, scaling
        self.x0n = bnorm(x0)  # x0: the state at grid[start] (a continued run starts inside the grid)
        self.per_sigma = self.x0n / self.levels[start] + math.sqrt(x0[0].numel())
        self.radius = torch.zeros_like(self.x0n)
        self.pairs = 0  # steps at which ERK-Guid had a pair to act on
        self.opened = False  # whether a correction has been applied to any sample
        self.peak = 0.0  # the largest ratio (state or correction) / scale seen so far

    def _settings(self) -> str:
        return f"w_stiff={self.w_stiff:g}, w_con={self.w_con:g}, scaling={self.scaling!r}"

    def values(self, i: int, x_next: Tensor, denoised: Tensor, corr: Any = None) -> Tensor:
        """Step ``i``'s guard values on the device, ``[state ratio, correction ratio, gate opened]`` (the last two
        only when ``corr``, the applied correction, is given): the engine reads them in its one sync per step."""
        self.radius = torch.maximum(self.radius, bnorm(denoised))
        scale = self.radius + self.levels[i + 1] * self.per_sigma  # where the state now is
        parts = [(bnorm(x_next) / scale).max()]
        if corr is not None:  # a move within the step: measured against the scale at the step's start
            move = self.radius + self.levels[i] * self.per_sigma
            parts += [(corr.norm / move).max(), (corr.beta != 0).any().to(parts[0].dtype)]
        return torch.stack(parts)

    def verdict(self, i: int, vals: list[float], proposal: Tensor | None, x_next: Tensor, corr: Any = None) -> None:
        """Raise :class:`DivergenceError`/:class:`NonFiniteError` if step ``i`` blew up, from the host copy of
        :meth:`values`. ``proposal`` is the solver's state before the correction (``None`` once the correction
        was written over it), ``x_next`` after it."""
        if corr is not None:
            self.pairs += 1
            self.opened = self.opened or vals[2] > 0
        bad = not math.isfinite(vals[0]) or (corr is not None and not math.isfinite(vals[1]))
        # the state is bounded once ERK-Guid has moved it; before that the run is the plain solver's
        worst = max(vals[0] if self.opened else 0.0, vals[1] if corr is not None else 0.0)
        if not bad and worst <= self.factor:
            self.peak = max(self.peak, worst)
            return
        scale = self.radius + self.levels[i + 1] * self.per_sigma
        move = self.radius + self.levels[i] * self.per_sigma if corr is not None else scale
        self._raise(i, proposal, x_next, corr, scale, move, vals)

    def check(self, i: int, proposal: Tensor, x_next: Tensor, denoised: Tensor, corr: Any = None) -> None:
        """:meth:`values` then :meth:`verdict` (one host synchronisation)."""
        self.verdict(i, self.values(i, x_next, denoised, corr).tolist(), proposal, x_next, corr)

    def _raise(self, i: int, proposal: Tensor | None, x_next: Tensor, corr: Any, scale: Tensor, move: Tensor,
               vals: list[float]) -> None:
        at = f"at step {i} (sigma {float(self.grid[i]):.6g} -> {float(self.grid[i + 1]):.6g})"
        k = self.factor
        if corr is not None and not (math.isfinite(vals[1]) and vals[1] <= k):
            scale = move
            ratio = corr.norm / scale
            b = int(torch.nan_to_num(ratio, nan=math.inf).argmax())
            what = ("overflowed to NaN/Inf" if not math.isfinite(vals[1]) else
                    f"moved sample {b} by {float(corr.norm[b]):.3g}, {float(ratio[b]):.3g} times the state scale "
                    f"{float(scale[b]):.3g} the ODE allows at this sigma (limit {k:g}x)")
            raise DivergenceError(
                f"ERK-Guid diverged {at}: its correction {what}. {self._settings()} is too strong for solver "
                f"{self.solver!r} on this grid: lower w_stiff, raise w_con or use more steps"
            )
        if proposal is None and not torch.isfinite(x_next).all():  # written over; the correction itself was finite
            what = "the solver's own step produced NaN/Inf" if corr is None else "the corrected state became NaN/Inf"
        elif proposal is not None and not torch.isfinite(proposal).all():
            what = "the solver's own step produced NaN/Inf"
        elif not torch.isfinite(x_next).all():
            what = "the state became NaN/Inf"
        else:
            ratio = bnorm(x_next) / scale
            b = int(ratio.argmax())
            what = (f"sample {b}'s state norm reached {float(ratio[b] * scale[b]):.3g}, {float(ratio[b]):.3g} times the "
                    f"scale {float(scale[b]):.3g} the ODE allows at this sigma (limit {k:g}x)")
        if self.w_stiff > 0 and self.opened:
            cause = (f"ERK-Guid ({self._settings()}) had corrected it on solver {self.solver!r}: lower w_stiff or raise "
                     "w_con (w_stiff=0 runs the plain solver)")
        else:
            cause = (f"no ERK-Guid correction had been applied, so solver {self.solver!r}'s own step overflowed: "
                     "use more steps or another solver, and check the model")
        raise DivergenceError(f"the sampling state diverged {at}: {what}; {cause}")

    def finish(self, stacklevel: int = 3) -> None:
        """Warn (once per run) when ``w_stiff > 0`` had no effect: no pair, or a gate that never opened."""
        if self.w_stiff <= 0:
            return
        if self.pairs == 0:
            warnings.warn(
                f"w_stiff={self.w_stiff:g} had no effect: solver {self.solver!r} offered no embedded pair at any step "
                f"of this {self.grid.numel() - 1}-step grid (euler has none; heun, dpm2, deis, ... need 2-3 steps); "
                "the result is the plain solver's",
                ErkGuidWarning, stacklevel=stacklevel,
            )
        elif not self.opened:
            warnings.warn(
                f"ERK-Guid never acted: its gate 1[rho > w_con] stayed closed at all {self.pairs} steps with a pair "
                f"(w_con={self.w_con:g} exceeds every stiffness estimate of this run); the result is the plain "
                f"solver {self.solver!r}'s. Lower w_con (erkguid profile shows rho per step)",
                ErkGuidWarning, stacklevel=stacklevel,
            )


def check_args(denoiser: Any, callback: Any, solver: Any) -> None:
    """The callables and the solver argument, before anything runs."""
    check_callable("denoiser", denoiser)
    check_callable("callback", callback, optional=True)
    check_solver_arg(solver)


__all__ = [
    "DIVERGENCE_FACTOR",
    "DivergenceError",
    "ErkGuidWarning",
    "NonFiniteError",
    "RunGuard",
    "check_args",
    "check_callable",
    "check_denoised_type",
    "option_value",
    "real_scalar",
    "seed_list",
    "sigma_grid",
    "solver_options",
    "strength",
]
