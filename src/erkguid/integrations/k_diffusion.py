"""k-diffusion-style sampler functions with ERK-Guid (usable from k-diffusion and ComfyUI code).

Every function has k-diffusion's signature ``sample_erk_X(model, x, sigmas, extra_args=None,
callback=None, disable=None, **options)`` and iterates the step engine (:class:`erkguid.Run`) with the
erkguid solver behind ``X``; no solver maths lives here. Conventions kept from k-diffusion:

* ``model(x, sigma_vector, **extra_args)`` returns the denoised x0 (EDM's D(x; sigma));
  ``extra_args`` (ComfyUI: ``model_options``, ``seed``, ``denoise_mask``) go to the model untouched.
* ``sigmas`` is decreasing; it may end in 0 (the usual full run) or at a positive sigma (ComfyUI
  ``SplitSigmas``): the engine then returns the state at that sigma, the last step being an ordinary
  (second-order, corrected) step as in k-diffusion. A one-value (or empty) list is a no-op that returns
  ``x`` (no model call), as stock samplers do.
* Increasing lists (unsampling / inversion, ComfyUI ``FlipSigmas``) are refused with a ValueError:
  the embedded pairs of Table 9 and the erkguid solvers are defined for decreasing grids only.
* One callback per step, before the state advances (as in k-diffusion), with keys ``x`` (the
  state at ``sigma``), ``i``, ``sigma``, ``sigma_hat`` (= ``sigma``: no churn) and ``denoised``,
  plus erkguid's per-sample ``rho``/``beta``/``correction_norm`` where the step had a pair.
* Names: ``heun``, ``dpm_2`` and ``dpmpp_2m`` equal the stock k-diffusion/ComfyUI samplers of that
  name at ``w_stiff = 0``. Solvers that differ from a stock sampler of a similar name get their own
  name (``deis_rhoab`` / ``deis_tab`` / ``deis_logrho``: erkguid's DEIS forms, not checked equal to ComfyUI's ``deis``;
  ``ipndm_ab``: the AB formula also on the last step, where ComfyUI's ``ipndm`` returns the denoised;
  ``unipc2_bh2``: UniPC order 2; ``dpmpp_3m``: k-diffusion's ``dpmpp_3m_sde`` at eta = 0). ``lms`` equals
  k-diffusion's ``sample_lms`` (order 4) at ``w_stiff = 0``.

Options are explicit: ``eta`` (must be 0 or None: the solvers are deterministic ODE steps) and
``noise_sampler`` (refused: stochastic erkguid solvers, ``heun_pc`` and ``adasde``, draw per-sample
noise from ``seeds``, default ``extra_args['seed'] + b``) are never silently ignored, and an
unknown option raises a TypeError. ``s_churn`` must be 0; ``s_tmin``/``s_tmax``/``s_noise`` only act
with churn and are accepted. Default strengths come from
:func:`erkguid.integrations._defaults.default_strengths`, i.e. :func:`erkguid.recommended` for the
solver at this list's NFE.

Split sigma lists (ComfyUI ``SplitSigmas``): ``return_state=True`` returns ``(x, state)`` (or
``on_state(state)`` receives it, for callers such as ``KSAMPLER`` that need a tensor back); passing that
``state=`` to the next call with the rest of the list (starting at the level the state is at) continues the
run exactly, ERK pair and solver history included (bit-identical to one run, tested), from ``state.x`` (the
call's ``x`` is then not read). A continued state is not consumed: the call copies its noise counter and keeps
full pairs, so the same state may be continued again (ComfyUI re-runs a node on a cached latent). Without
``state=`` a call starts a fresh run: the rule is explicit, nothing is cached. The ComfyUI nodes carry the
state in the LATENT (:mod:`erkguid.integrations.comfyui`).

Differences from k-diffusion, by design: no churn (a step never draws global-RNG noise), and the
state keeps its dtype (k-diffusion promotes bf16 to fp32 through its fp32 sigmas).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..engine import Run, State
from ..solvers import SOLVERS, get_solver
from ._defaults import default_strengths

#: sampler name -> erkguid solver name, one entry per solver with an embedded pair. A function
#: ``sample_erk_<name>`` exists for each entry whose solver is registered (see :func:`available`).
#: A name equals a stock k-diffusion/ComfyUI sampler only where it behaves the same at w_stiff = 0.
KDIFF_NAMES: dict[str, str] = {
    "heun": "heun",
    "dpm_2": "dpm2",
    "dpmpp_2m": "dpmpp_2m",
    "deis_rhoab": "deis",
    "deis_tab": "deis",
    "deis_logrho": "deis",
    "ipndm_ab": "ipndm",
    "lms": "lms",
    "dpmpp_3m": "dpmpp_3m",
    "unipc2_bh2": "unipc",
    "heun_pc": "heun_pc",
    "adasde": "adasde",
}


#: solver options fixed by a name (merged under the caller's ``solver_options``).
KDIFF_OPTIONS: dict[str, dict[str, Any]] = {"deis_rhoab": {"mode": "rhoab"}, "deis_tab": {"mode": "tab"},
                                            "deis_logrho": {"mode": "logrho"}}


def _default_seeds(extra_args: dict[str, Any], batch: int) -> list[int]:
    base = extra_args.get("seed", 0)
    base = int(base) if isinstance(base, (int, float)) and base >= 0 else 0
    return [base + b for b in range(batch)]


def _check_list(s: Tensor) -> None:
    """Refuse what the ERK samplers cannot run, with the reason."""
    if s.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D sequence, got shape {tuple(s.shape)}")
    if (s[1:] > s[:-1]).any():
        raise ValueError(
            "sigmas increase (unsampling / inversion, e.g. ComfyUI FlipSigmas): ERK-Guid samplers run decreasing "
            "sigma lists only (their embedded pairs are defined for denoising steps); use a stock sampler to invert"
        )


@torch.no_grad()
def sample_erk(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    disable: bool | None = None,
    *,
    solver: str = "heun",
    w_stiff: float | None = None,
    w_con: float | None = None,
    scaling: str | None = None,
    trust: float | None = None,
    seeds: Sequence[int] | Tensor | None = None,
    solver_options: dict[str, Any] | None = None,
    eta: float | None = None,
    noise_sampler: Callable[..., Tensor] | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    state: State | None = None,
    return_state: bool = False,
    on_state: Callable[[State], Any] | None = None,
) -> Any:
    """Run erkguid solver ``solver`` with ERK-Guid (Eq. 19) over a k-diffusion sigma list.

    ``w_stiff = 0`` gives the plain solver (equal to k-diffusion's ``sample_<name>`` up to
    floating-point rounding for heun / dpm_2 / dpmpp_2m / lms). Strengths left ``None`` (all four of
    ``w_stiff``, ``w_con``, ``scaling``, ``trust`` together) take
    :func:`~erkguid.integrations._defaults.default_strengths` of ``solver`` at this list's NFE.
    ``state``/``return_state``/``on_state``: continue a split sigma list exactly (see the module docstring).
    """
    if s_churn != 0:
        raise ValueError(f"s_churn must be 0 for ERK-Guid samplers (deterministic ODE steps), got {s_churn!r}")
    if eta not in (None, 0, 0.0):
        raise ValueError(f"eta must be 0 or None for ERK-Guid samplers (deterministic steps, no ancestral noise), got {eta!r}")
    if noise_sampler is not None:
        raise ValueError(
            "noise_sampler is not supported: stochastic erkguid solvers (heun_pc, adasde) draw per-sample noise from "
            "seeds (default extra_args['seed'] + b); pass seeds=[...] instead"
        )
    extra_args = {} if extra_args is None else extra_args
    s = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    _check_list(s)
    if state is not None and not isinstance(state, State):
        raise TypeError(f"state must be an erkguid State (from return_state=True), got {type(state).__name__}")
    if s.numel() <= 1:  # SplitSigmas at step 0 or N, BasicScheduler at denoise 0: nothing to do, as in stock samplers
        if on_state is not None and state is not None:
            on_state(state)
        return (x, state) if return_state else x
    if state is not None:  # continue a copy: the caller's State stays valid (its noise counter, its carry's partner)
        state = dataclasses.replace(state, noise=copy.copy(state.noise))
    if w_stiff is None and w_con is None and scaling is None and trust is None:
        spec = get_solver(solver)
        steps = s.numel() - 1 + (0 if state is None else state.sigmas.numel() - 1)
        d = default_strengths(spec.name, spec.nfe(steps, solver_options, to_zero=bool(s[-1] == 0)))
        w_stiff, w_con, scaling, trust = d["w_stiff"], d["w_con"], d["scaling"], d["trust"]
    sig_in = sigmas if isinstance(sigmas, Tensor) else s
    if seeds is None and state is None:
        seeds = _default_seeds(extra_args, x.shape[0])
    run = Run(
        model, x if state is None else state, s, solver=solver, w_stiff=w_stiff or 0.0, w_con=w_con or 0.0,
        scaling=scaling or "z2", trust=trust, solver_options=solver_options, seeds=seeds,
        want_pair=callback is not None or state is not None or None, extra_args=extra_args,
        progress=not disable if disable is not None else True,
    )
    prev = x if state is None else state.x
    for step in run:
        if callback is not None:
            j = step.i - run.start
            info = step.info()
            callback({"x": prev, "i": j, "sigma": sig_in[j], "sigma_hat": sig_in[j], "denoised": step.denoised,
                      "rho": info["rho"], "beta": info["beta"], "correction_norm": info["correction_norm"]})
        prev = step.x
        del step  # the next step runs without this one's pair
    out = run.state.x.to(run.state.dtype)
    if on_state is not None:
        on_state(run.state)
    return (out, run.state) if return_state else out


def available() -> list[str]:
    """The k-diffusion names (``heun``, ``dpm_2``, ...) whose erkguid solver is registered."""
    return [k for k, v in KDIFF_NAMES.items() if v in SOLVERS]


def make_sampler(name: str) -> Callable[..., Any]:
    """Build ``sample_erk_<name>`` for a k-diffusion sampler name in :data:`KDIFF_NAMES`."""
    if name not in KDIFF_NAMES:
        raise ValueError(f"name must be one of {sorted(KDIFF_NAMES)}, got {name!r}")
    solver = KDIFF_NAMES[name]
    if solver not in SOLVERS:
        raise ValueError(f"erkguid solver {solver!r} (for {name!r}) is not registered; available: {available()}")
    fixed = KDIFF_OPTIONS.get(name, {})

    def fn(
        model: Callable[..., Tensor],
        x: Tensor,
        sigmas: Tensor | Sequence[float],
        extra_args: dict[str, Any] | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        disable: bool | None = None,
        w_stiff: float | None = None,
        w_con: float | None = None,
        **options: Any,
    ) -> Any:
        if fixed:
            options["solver_options"] = {**fixed, **(options.get("solver_options") or {})}
        return sample_erk(model, x, sigmas, extra_args, callback, disable, solver=solver, w_stiff=w_stiff, w_con=w_con, **options)

    fn.__name__ = fn.__qualname__ = f"sample_erk_{name}"
    fn.erkguid_solver = solver  # type: ignore[attr-defined]  # the ComfyUI nodes recognise ERK samplers by it
    fn.__doc__ = (
        f"k-diffusion-style ``sample_{name}`` with ERK-Guid (erkguid solver {solver!r}"
        f"{', options ' + repr(fixed) if fixed else ''}); see :func:`sample_erk` for the options "
        "(w_stiff, w_con, scaling, trust, seeds, solver_options, state/return_state)."
    )
    return fn


SAMPLERS: dict[str, Callable[..., Any]] = {f"erk_{k}": make_sampler(k) for k in available()}
globals().update({f"sample_{k}": v for k, v in SAMPLERS.items()})


def __getattr__(name: str) -> Callable[..., Any]:
    """``sample_erk_<name>`` for solvers registered after this module was imported."""
    if name.startswith("sample_erk_") and name[len("sample_erk_"):] in KDIFF_NAMES:
        fn = make_sampler(name[len("sample_erk_"):])
        SAMPLERS[name[len("sample_"):]] = fn
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sample_erk_heun: Callable[..., Any] = SAMPLERS["erk_heun"]
