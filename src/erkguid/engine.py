"""The step engine: one iterator over a run, on which ``sample`` and every harness are written.

``Run(denoiser, x, sigmas, ...)`` validates the run once, runs the solver's setup hook once, then
yields one :class:`Step` per grid interval: the new state, the denoised estimate, the sigma pair, the
step's embedded :class:`~erkguid.correction.ErkPair` and the ERK-Guid :class:`~erkguid.correction.Correction`
(Eq. 19/63; applied to every solver here, never by a solver), and the evaluations per sample so far.
After (or during) iteration ``run.state`` is a resumable :class:`State`: ``Run(denoiser, state, rest)``
continues it, solver carry (the ERK partner, multistep history) included, so a grid split in two gives
bit for bit the result of one run.

Grids end in 0 (the last step is the solver's final denoising step, never corrected) or at a positive
level (k-diffusion semantics: the last step is an ordinary step between positive levels, and
ERK-Guid may correct it).

Finiteness (``check_finite``): ``"step"`` (default) folds every denoiser output and the new state into
one device-side flag and reads it once per step (one device-to-host sync per step); ``"end"`` reads it
once after the last step; ``"off"`` never. A failure raises :class:`NonFiniteError` naming the step and
whether the model or the step produced it.

Guidance layers: a denoiser with ``wants_estimate = True`` (ERK-Proj, :class:`erkguid.guidance.ErkProj`)
is called as ``denoiser.layer_call(x, sigma, E, **cond) -> (D, D_plain)`` with ``E`` the
:class:`~erkguid.correction.Estimate` of the previous step's pair (``None`` before the first pair), passed
explicitly by the engine. ``D`` is what the solver integrates; ``D_plain`` is the layer's unmodified output
(the plain guided denoiser), from which the engine builds the estimate (Eq. 56-57): the pair's members are
states the solver evaluated, so their plain drifts come from the engine's log of this and the previous
step's evaluations, matched by tensor identity (no value comparison; a member the layer did not evaluate,
e.g. AdaSDE's analytic first step, leaves the pair's own drifts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _validate
from ._batch import acc_dtype, all_finite
from ._validate import NonFiniteError, RunGuard
from .correction import SCALINGS, Correction, ErkPair, Estimate, check_strengths, erk_guid, estimate
from .noise import PerSampleNoise
from .schedules import check_sigmas
from .solvers.base import Solver, StepContext, get_solver

CheckFinite = Literal["step", "end", "off"]
CHECK_FINITE: tuple[str, ...] = ("step", "end", "off")
_MODEL, _STATE, _INPUT = 1, 2, 4  # bits of the per-step non-finite code (_INPUT: the model was handed NaN/Inf)


@dataclass(frozen=True)
class State:
    """Where a run stands; ``Run(denoiser, state, rest_of_grid)`` continues it.

    Attributes:
        x: the state at ``sigmas[-1]`` (float32 or float64, whatever the input dtype).
        sigmas: the grid run so far (float64, CPU), ending at the current level.
        solver: the solver's name; a continuation must use the same solver.
        carry: the solver's carry (ERK partner, history) for the next step.
        nfe: network evaluations per sample so far.
        noise: the noise source, per-sample (:class:`~erkguid.noise.PerSampleNoise`) or the run's ``noise``
            callable (its draw counter advances: resume a State once; an ERK-Guid run with reduced pairs also
            releases the carry's partner when it takes the next step).
        estimate: the last pair's stiffness estimate, for guidance layers (ERK-Proj).
        evals: a guidance layer's evaluations of the last step ``(x, plain drift)``, for the next pair.
        dtype: the dtype of the run's input, which ``sample`` returns.
    """

    x: Tensor
    sigmas: Tensor
    solver: str
    carry: Any = None
    nfe: int = 0
    noise: Callable[[Tensor], Tensor] | None = None
    estimate: Estimate | None = None
    dtype: torch.dtype = torch.float32
    evals: tuple[tuple[Tensor, Tensor], ...] = ()

    @property
    def sigma(self) -> float:
        return float(self.sigmas[-1])


@dataclass(frozen=True)
class Step:
    """One step of a run, as the engine yields it.

    Attributes:
        i: index of the step in the run's full grid (continuations keep counting).
        sigma, sigma_next: the step's interval.
        x: the state at ``sigma_next`` (ERK-Guid applied when ``w_stiff > 0``).
        denoised: D(x_i; sigma_i) as the solver reported it.
        pair: the step's embedded ERK pair (``None`` where the solver has none, e.g. the first Heun step).
        correction: ERK-Guid's per-sample ``rho``, ``beta`` and correction norm (``None`` without a pair or
            where nothing asked for them; ``applied`` says whether it moved ``x``).
        applied: whether the correction was applied to ``x`` (``w_stiff > 0``).
        nfe: network evaluations per sample since the start of the (first) run.
    """

    i: int
    sigma: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    pair: ErkPair | None
    correction: Correction | None
    applied: bool
    nfe: int

    def estimate(self) -> Estimate | None:
        """rho (Eq. 17) and v (Eq. 18) of this step's pair, or ``None`` (computed on demand)."""
        return None if self.pair is None else estimate(self.pair)

    def info(self) -> dict[str, Any]:
        """The ``sample(..., callback=...)`` dict of this step."""
        c = self.correction
        return {
            "x": self.x, "i": self.i, "sigma": self.sigma, "sigma_next": self.sigma_next, "denoised": self.denoised,
            "nfe": self.nfe, "rho": None if c is None else c.rho, "beta": None if c is None else c.beta,
            "correction_norm": None if c is None else (c.norm if self.applied else torch.zeros_like(c.norm)),
            "pair": self.pair,
        }


class _Denoise:
    """The engine's view of the user's denoiser: per-sample sigma ``[B]``, shape check, count, finite flag."""

    def __init__(self, denoiser: Callable[..., Tensor], extra: Mapping[str, Any], sig_dtype: torch.dtype,
                 check: bool, layer: bool) -> None:
        self.fn, self.extra, self.sig_dtype, self.check, self.layer = denoiser, extra, sig_dtype, check, layer
        self.calls = 0
        self.step = 0
        self.flag: Tensor | None = None  # device-side: some output of this step was non-finite
        self.estimate: Estimate | None = None
        self.evals: list[tuple[Tensor, Tensor]] = []  # layer runs: (x, plain drift) of this step's evaluations
        self.prev_evals: tuple[tuple[Tensor, Tensor], ...] = ()  # ... and of the previous step's

    def __call__(self, x: Tensor, sigma: float | Tensor, /) -> Tensor:
        if isinstance(sigma, Tensor):  # a 0-d tensor from differentiable coefficients: autograd reaches it
            s = sigma.to(x.device, self.sig_dtype).expand(x.shape[0])
        else:
            s = torch.full((x.shape[0],), float(sigma), dtype=self.sig_dtype, device=x.device)
        if self.layer:
            out, plain = self.fn.layer_call(x, s, self.estimate, **self.extra)  # type: ignore[attr-defined]
            self.evals.append((x, (x - plain.to(x.dtype)) / float(sigma)))
        else:
            out = self.fn(x, s, **self.extra)
        self.calls += 1
        _validate.check_denoised_type(out, x, sigma, self.step)
        if self.check:  # device-side: NaN/Inf out of the model (code _MODEL), and whether its input held some (_INPUT)
            bad = all_finite(out).logical_not().to(torch.int64)
            bad = bad * (_MODEL + _INPUT * all_finite(x).logical_not().to(torch.int64))
            self.flag = bad if self.flag is None else torch.maximum(self.flag, bad)
        result: Tensor = out.to(x.dtype)
        return result


def _plain_pair(pair: ErkPair, evals: Sequence[tuple[Tensor, Tensor]]) -> ErkPair:
    """The pair with both drifts replaced by the layer's plain drifts when the layer evaluated both members."""
    f = next((pf for ex, pf in reversed(evals) if ex is pair.x), None)
    f_alt = next((pf for ex, pf in reversed(evals) if ex is pair.x_alt), None)
    if f is None or f_alt is None:
        return pair
    return ErkPair(pair.x, f, pair.x_alt, f_alt, pair.h, pair.sign)


def _check_x(x: Any) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError("x must be a floating-point tensor of shape [B, ...] with B >= 1")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN/Inf")


def conditioning(extra_args: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The denoiser's keyword conditioning: k-diffusion's ``extra_args`` merged with ``**extra``.

    ``extra_args`` is the recommended form (its keys never collide with sampler options); a key given in
    both raises a ValueError.
    """
    if extra_args is None:
        return dict(extra)
    if not isinstance(extra_args, Mapping):
        raise TypeError(f"extra_args must be a mapping of conditioning keywords, got {type(extra_args).__name__}")
    both = sorted(set(extra_args) & set(extra))
    if both:
        raise ValueError(f"conditioning keys {both} given both in extra_args and as keywords; pass them once")
    return {**extra_args, **extra}


class Run:
    """One sampling run as an iterator of :class:`Step` (see the module docstring).

    Args:
        denoiser: EDM ``D(x, sigma[B], **cond)`` (x-prediction).
        x: the state at ``sigmas[0]`` (``[B, *S]``), or a :class:`State` to continue (then ``sigmas[0]``
            must be the level the state is at).
        sigmas: strictly decreasing grid ending in 0 or at a positive level.
        solver, w_stiff, w_con, scaling, trust, solver_options, seeds: as :func:`erkguid.sample`.
        want_pair: keep and report the embedded pairs even without ERK-Guid (callbacks, traces).
            ``None``: when ERK-Guid is on or the grid ends above 0 (so the run can be continued); with
            ERK-Guid on, the steps then report reduced pairs (:meth:`~erkguid.correction.ErkPair.reduce`:
            norms and drift difference only, the partner state released at once). ``True`` keeps full pairs.
        check_finite: ``"step"`` (one sync per step), ``"end"`` (one per run) or ``"off"``.
        check_divergence: with ``check_finite="step"``, raise :class:`~erkguid.DivergenceError` when the ERK-Guid
            correction, or the state it moved, grows far beyond what sigma allows (docs/validation.md), read in the
            same sync; ``False`` keeps only the NaN/Inf check (sweeps that record where ERK-Guid hurts).
        progress: show a tqdm progress bar.
        extra_args: keyword conditioning for the denoiser (k-diffusion's name; see :func:`conditioning`).
        noise: a noise source ``noise(like) -> Tensor`` (standard normal, shaped like ``like``) for stochastic
            steps, instead of ``seeds`` (distillation draws from its own generator).
        detach_state: start every step from ``x.detach()`` (truncated backpropagation through the run; the
            yielded ``Step.x`` keeps its graph). Differentiable runs: see "Differentiable runs" in docs/engine.md.
    """

    def __init__(
        self,
        denoiser: Callable[..., Tensor],
        x: Tensor | State,
        sigmas: Tensor | Sequence[float],
        *,
        solver: str | Solver = "heun",
        w_stiff: float = 0.0,
        w_con: float = 0.0,
        scaling: str = "z2",
        trust: float | None = None,
        solver_options: Mapping[str, Any] | None = None,
        seeds: Sequence[int] | Tensor | None = None,
        want_pair: bool | None = None,
        check_finite: str = "step",
        check_divergence: bool = True,
        progress: bool = False,
        extra_args: Mapping[str, Any] | None = None,
        noise: Callable[[Tensor], Tensor] | None = None,
        detach_state: bool = False,
    ) -> None:
        _validate.check_args(denoiser, None, solver)
        w_stiff, w_con = check_strengths(w_stiff, w_con)
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if trust is not None and (isinstance(trust, bool) or not isinstance(trust, (int, float)) or not 0 < trust < math.inf):
            raise ValueError(f"trust must be None or a finite number > 0, got {trust!r}")
        if check_finite not in CHECK_FINITE:
            raise ValueError(f"check_finite must be one of {CHECK_FINITE}, got {check_finite!r}")
        self.spec = get_solver(solver)
        options = self.spec.resolve(_validate.solver_options(self.spec, solver_options))
        prev = x if isinstance(x, State) else None
        if prev is not None:
            grid, start = self._continue(prev, sigmas)
            if seeds is not None or noise is not None:
                raise ValueError("seeds and noise cannot be given when continuing a State (its noise source continues)")
            x0, noise, dtype = prev.x, prev.noise, prev.dtype
        else:
            _check_x(x)
            grid, start = check_sigmas(sigmas, allow_positive_end=True), 0
            assert isinstance(x, Tensor)
            dtype = x.dtype
            x0 = x.to(torch.promote_types(x.dtype, torch.float32))  # the state never lives in fp16/bf16
            if seeds is not None:
                if noise is not None:
                    raise ValueError("give either seeds or a noise source, not both")
                per_sample = PerSampleNoise(seeds, x.device)
                if len(per_sample) != x.shape[0]:
                    raise ValueError(f"seeds holds {len(per_sample)} seeds for a batch of {x.shape[0]}")
                noise = per_sample
            elif noise is not None and not callable(noise):
                raise TypeError(f"noise must be a callable noise(like) -> Tensor, got {type(noise).__name__}")
        self.w_stiff, self.w_con, self.scaling, self.check = float(w_stiff), float(w_con), scaling, check_finite
        self.trust = None if trust is None else float(trust)
        self.guide = w_stiff > 0
        ends_above_zero = bool(grid[-1] > 0)
        layer = bool(getattr(denoiser, "wants_estimate", False))  # a guidance layer reads the pairs' estimates
        self.want_pair = (self.guide or ends_above_zero if want_pair is None else bool(want_pair)) or self.guide or layer
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, got {type(progress).__name__} {progress!r}")
        self.progress, self.detach_state = progress, bool(detach_state)
        self._den = _Denoise(denoiser, dict(extra_args or {}), acc_dtype(x0.dtype), check_finite != "off", layer)
        self._den.calls = 0 if prev is None else prev.nfe
        self._den.estimate = None if prev is None else prev.estimate
        self._den.prev_evals = () if prev is None else prev.evals
        self._noise = noise
        if self.spec.prepare is not None:
            options = self.spec.prepare(options, grid)
        # only ERK-Guid reads the pairs (nobody asked for them, no guidance layer): steps may fold each pair at
        # once (ErkPair.reduce) and release its partner, so ERK-Guid costs at most one extra state tensor
        self.reduce_pair = self.guide and want_pair is None and not layer
        self.ctx = StepContext(self._den, grid, noise, want_pair=self.want_pair, reduce_pair=self.reduce_pair,
                               plan=self.spec.plan(grid, options))
        self.options = options
        self.start = start
        self.warn_stacklevel = 4  # ErkGuidWarning points at the code iterating the run (sample() adds one level)
        # divergence guard (docs/validation.md): read in the step's one sync, so only with check_finite="step"
        self._guard = (RunGuard(x0, grid, self.spec.name, self.w_stiff, self.w_con, scaling,
                                None if check_divergence else math.inf, start) if check_finite == "step" else None)
        self._state = State(x0, grid[: start + 1], self.spec.name, None if prev is None else prev.carry,
                            self._den.calls, noise, self._den.estimate, dtype)
        self._started = False

    def _continue(self, prev: State, sigmas: Tensor | Sequence[float]) -> tuple[Tensor, int]:
        if prev.solver != self.spec.name:
            raise ValueError(f"state was produced by solver {prev.solver!r}; continue it with the same solver, "
                             f"got {self.spec.name!r}")
        rest = torch.as_tensor(sigmas).detach().to("cpu", torch.float64).reshape(-1)
        if rest.numel() < 2 or float(rest[0]) != prev.sigma:
            first = float(rest[0]) if rest.numel() else None
            raise ValueError(f"sigmas must start at the level the state is at ({prev.sigma:.6g}), got {first}")
        grid = check_sigmas(torch.cat([prev.sigmas, rest[1:]]), allow_positive_end=True)
        return grid, prev.sigmas.numel() - 1

    @property
    def state(self) -> State:
        """The resumable state after the last step taken (the input before the first)."""
        return self._state

    @property
    def sigmas(self) -> Tensor:
        """The run's full grid (a continuation's includes the steps already taken)."""
        return self.ctx.sigmas

    def __iter__(self) -> Iterator[Step]:
        if self._started:
            raise RuntimeError("a Run is iterated once; continue it with Run(denoiser, run.state, more_sigmas)")
        self._started = True
        spec, ctx, den, grid = self.spec, self.ctx, self._den, self.ctx.levels
        x, carry = self._state.x, self._state.carry
        pending: Tensor | None = None  # "end" policy: first failing step and its code, on the device
        n = len(grid) - 1
        desc = f"{spec.name}{' +ERK' if self.guide else ''}"
        for i in tqdm(range(self.start, n), disable=not self.progress, desc=desc, leave=False):
            den.step, den.flag, den.evals = i, None, []
            out = spec.step(ctx, i, x, carry, **self.options)
            x_next, corr = out.x, None
            proposal: Tensor | None = out.x
            if out.pair is not None and grid[i + 1] > 0 and self.want_pair:
                # only ERK-Guid reads this step (reduced pair): the proposal is written over unless it is the input
                # or D itself; the guard then no longer tells the proposal's NaN from the correction's
                mine = self.reduce_pair and x_next.data_ptr() not in (x.data_ptr(), out.denoised.data_ptr())
                corr = erk_guid(x_next, out.pair, self.w_stiff, self.w_con, self.scaling, self.trust, overwrite=mine)
                if self.guide:
                    x_next = corr.x
                if corr.x.data_ptr() == out.x.data_ptr():
                    proposal = None
            if self.check != "off":
                code = all_finite(x_next).logical_not().to(torch.int64) * _STATE
                if den.flag is not None:
                    code = code + den.flag
                if self.check == "step":
                    applied = corr if self.guide else None
                    if self._guard is None:
                        if not bool(code == 0):  # the one device-to-host sync of the step (read as "all finite")
                            self._raise(int(code), i)
                    else:
                        gv = self._guard.values(i, x_next, out.denoised, applied)
                        vals = torch.cat([code.reshape(1).to(gv.dtype), gv]).tolist()  # the step's one sync
                        self._raise(int(vals[0]) & (_MODEL | _INPUT), i)  # the model's NaN/Inf first, then
                        self._guard.verdict(i, vals[1:], proposal, x_next, applied)  # the guard names the setting
                        self._raise(int(vals[0]), i)
                else:
                    tagged = torch.where(code > 0, code + 8 * i, torch.zeros_like(code))
                    pending = tagged if pending is None else torch.where(pending > 0, pending, tagged)
            if den.layer:
                if out.pair is not None:
                    den.estimate = estimate(_plain_pair(out.pair, (*den.prev_evals, *den.evals)))
                den.prev_evals = tuple(den.evals)
            carry = out.carry
            self._state = State(x_next, self.ctx.sigmas[: i + 2], spec.name, carry, den.calls, self._noise,
                                den.estimate, self._state.dtype, den.prev_evals)
            step = Step(i, grid[i], grid[i + 1], x_next, out.denoised, out.pair, corr, self.guide, den.calls)
            del out, corr  # the consumer holds the step; nothing else keeps the pair alive
            x = x_next.detach() if self.detach_state else x_next
            yield step
            del step  # the next step runs without this one's pair: the consumer decides what it keeps
        if pending is not None and not bool(pending == 0):  # the one sync of the "end" policy
            tag = int(pending)
            self._raise(tag % 8, tag // 8)
        if self._guard is not None:
            self._guard.finish(self.warn_stacklevel)  # ERK-Guid warnings: no pair at any step, or a gate that never opened

    def _raise(self, code: int, i: int) -> None:
        if not code:
            return
        s, sn = self.ctx.levels[i], self.ctx.levels[i + 1]
        if code & _MODEL and code & _INPUT:
            raise NonFiniteError(f"the solver passed a state holding NaN/Inf to the denoiser at step {i} "
                                 f"(sigma={s:.6g} -> {sn:.6g}): the step itself overflowed, not the model")
        if code & _MODEL:
            raise NonFiniteError(
                f"denoiser returned NaN/Inf for a finite input (the state was finite) at step {i} (sigma={s:.6g} -> {sn:.6g}); "
                "check the model, its dtype and the sigma range"
            )
        raise NonFiniteError(f"the solver state became NaN/Inf at step {i} (sigma={s:.6g} -> {sn:.6g})")

    def finish(self) -> State:
        """Run every remaining step and return the final :class:`State`."""
        for _ in self:
            pass
        return self._state

