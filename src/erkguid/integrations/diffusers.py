"""diffusers schedulers with ERK-Guid: drop-in subclasses of the stock schedulers (needs ``diffusers``).

Each ``ERK<Stock>`` subclasses diffusers' ``<Stock>`` and hooks only ``step`` (plus
``set_timesteps``/``set_begin_index`` to clear its own state): the stock update runs unchanged,
so ``w_stiff = 0`` reproduces the stock scheduler bit for bit, and after every completed solver
step the shared correction :func:`erkguid.erk_guid` (Eq. 19) is applied with the solver's
embedded pair (Table 9), built from model calls the pipeline already made (zero extra NFE).

==================================  ======================================  ==========================
class                               pair (Table 9)                          equals ``erkguid.sample``
==================================  ======================================  ==========================
ERKHeunDiscreteScheduler            x_i vs previous Euler point, +1         solver ``heun``
ERKKDPM2DiscreteScheduler           x_i vs log-sigma midpoint, +1           solver ``dpm2``
ERKDPMSolverMultistepScheduler      x_i vs x_{i-1} (evaluated points), -1   ``dpmpp_2m`` (dpmsolver++)
ERKUniPCMultistepScheduler          predictor points x_i^p vs x_{i-1}^p, -1 ``unipc`` (bh2, order 2)
ERKDEISMultistepScheduler           x_i vs x_{i-1}, -1                      ``deis`` (mode ``logrho``)
ERKFlowMatchHeunDiscreteScheduler   as Heun, in the flow's own (x_t, t, v)  ``heun`` on D = x - t v
==================================  ======================================  ==========================

VP schedulers step the VP state ``x_vp = alpha x`` (``alpha, sigma_t`` from the scheduler's own
``_sigma_to_alpha_sigma_t``); the pair and the correction are taken in the EDM state
``x = x_vp / alpha`` with ``sigma = sigma_t / alpha``, where the drift is the noise prediction
``eps = (x_vp - alpha x0) / sigma_t``. The step that lands on sigma = 0 is never corrected, nor a zero-length
step (the repeated final sigma of Karras/exponential grids, an identity step). ``erk_solver_options()`` gives the
``solver_options`` with which :func:`erkguid.sample` runs the scheduler's update.

Usage::

    pipe.scheduler = ERKDPMSolverMultistepScheduler.from_config(pipe.scheduler.config, w_stiff=0.5, w_con=0.5)

Defaults come from :func:`erkguid.integrations._defaults.default_strengths` (``erkguid.recommended`` at the
run's NFE; off for the multistep solvers).
State: the ERK cache is cleared by ``set_timesteps`` and ``set_begin_index``; ``erk_history``
holds per completed step the per-sample ``rho``, ``beta`` and ``correction_norm``.

Reloading a saved pipeline: ``save_pretrained`` records ``["erkguid.integrations.diffusers",
"<Class>"]`` in ``model_index.json``. diffusers resolves such a module only from ``sys.modules``
(it never imports a module a repository names) and then looks up its loadable base classes
(``SchedulerMixin``, ...) in that module's namespace. This module therefore exports
``SchedulerMixin``, and ``import erkguid`` registers it lazily, so ``DiffusionPipeline.from_pretrained``
works in any process that imported erkguid. Importing this module also lists the ERK classes in
diffusers' namespace and in the stock schedulers' ``compatibles``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import (
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    SchedulerMixin,
    UniPCMultistepScheduler,
)
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers
from torch import Tensor

from ..correction import SCALINGS, ErkPair, check_strengths, erk_guid
from ..solvers import get_solver
from ._defaults import default_strengths

__all__ = [
    "ERKDEISMultistepScheduler",
    "ERKDPMSolverMultistepScheduler",
    "ERKFlowMatchHeunDiscreteScheduler",
    "ERKHeunDiscreteScheduler",
    "ERKKDPM2DiscreteScheduler",
    "ERKUniPCMultistepScheduler",
    "SchedulerMixin",  # looked up here by diffusers' pipeline loader (see the module docstring)
]

ERK_KEYS = ("w_stiff", "w_con", "erk_scaling", "erk_trust")


def _stock(cls: type) -> type | None:
    """The diffusers scheduler class an ERK class extends (first base defined inside diffusers), or None for a mixin."""
    return next((b for b in cls.__mro__ if b.__module__.startswith("diffusers.")), None)


def _make_init(stock: type, solver: str) -> Callable[..., None]:
    """``__init__`` with the stock signature plus keyword-only ``w_stiff, w_con, erk_scaling, erk_trust`` (registered
    to config). ``w_stiff=None`` (default): :func:`erkguid.recommended` for ``solver`` at each run's NFE."""

    def __init__(self: Any, *args: Any, w_stiff: float | None = None, w_con: float | None = None,
                 erk_scaling: str | None = None, erk_trust: float | None = None, **kwargs: Any) -> None:
        if w_stiff is not None or w_con is not None:
            check_strengths(0.0 if w_stiff is None else w_stiff, 0.0 if w_con is None else w_con)
        if erk_scaling is not None and erk_scaling not in SCALINGS:
            raise ValueError(f"erk_scaling must be one of {SCALINGS}, got {erk_scaling!r}")
        if erk_trust is not None and (isinstance(erk_trust, bool) or not isinstance(erk_trust, (int, float))
                                      or not 0 < erk_trust < float("inf")):
            raise ValueError(f"erk_trust must be None or a finite number > 0, got {erk_trust!r}")
        stock.__init__(self, *args, **kwargs)
        self._erk_reset()

    sig = inspect.signature(stock.__init__)
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in ERK_KEYS]
    __init__.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    __init__.__doc__ = (f"``{stock.__name__}.__init__`` plus ``w_stiff``, ``w_con``, ``erk_scaling``, ``erk_trust`` (ERK-Guid, "
                        "Eq. 19); ``w_stiff=None``: erkguid.recommended at each run's NFE.")
    return register_to_config(__init__)


def _wrap(stock_method: Callable[..., Any], body: Callable[..., Any]) -> Callable[..., Any]:
    """A method with ``stock_method``'s signature (pipelines inspect it) whose call runs ``body(self, bound_args)``."""
    sig = inspect.signature(stock_method)

    @functools.wraps(stock_method)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        a.pop("self")
        return body(self, a)

    return method


class _ERKScheduler:
    """The shared ERK-Guid plumbing of every ERK scheduler (one place; subclasses only name their pair).

    Subclasses set ``_erk_solver`` (the erkguid solver whose pair they use; it picks the default
    strengths) and implement ``_erk_step(stock, args)`` around the stock ``step``. For each concrete
    class, ``__init__``, ``set_timesteps`` and ``step`` are generated here with the stock signatures
    (pipelines inspect them for ``sigmas``/``timesteps``/``generator``/``eta``).
    """

    _erk_solver = "heun"
    config: Any
    sigmas: Tensor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        stock = _stock(cls)
        if stock is None:  # an intermediate mixin
            return
        if "__init__" not in cls.__dict__:
            cls.__init__ = _make_init(stock, cls._erk_solver)
        if "set_timesteps" not in cls.__dict__:

            def set_timesteps(self: Any, a: dict[str, Any]) -> Any:
                self._erk_reset()
                return stock.set_timesteps(self, **a)

            cls.set_timesteps = _wrap(stock.set_timesteps, set_timesteps)
        cls.step = _wrap(stock.step, lambda self, a: self._erk_call_step(stock, a))

    # ------------------------------------------------------------------ state
    def _erk_reset(self) -> None:
        self._erk: dict[str, Any] = {}
        #: per step with a pair: dict(step, rho [B], beta [B], correction_norm [B])
        self.erk_history: list[dict[str, Any]] = []

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``begin_index`` (img2img): the stock behaviour, plus a cleared ERK cache and solver stage."""
        super().set_begin_index(begin_index)
        for k in ("prev_derivative", "dt", "sample"):  # the two-stage schedulers' half-finished step
            if hasattr(self, k):
                setattr(self, k, None)
        self._erk_reset()

    def erk_solver_options(self) -> dict[str, Any]:
        """``solver_options`` for :func:`erkguid.sample` with solver ``_erk_solver`` that run this scheduler's update
        (the table in the module docstring; empty: the solver's defaults)."""
        return {}

    def erk_setting(self) -> dict[str, Any]:
        """The ERK-Guid setting of this run: the configured one, or (``w_stiff=None``) :func:`erkguid.recommended`
        for the scheduler's solver at the NFE of ``num_inference_steps`` (see :mod:`erkguid.integrations._defaults`)."""
        cfg = self.config
        if cfg.w_stiff is None:
            n = getattr(self, "num_inference_steps", None)
            return default_strengths(self._erk_solver, None if not n else get_solver(self._erk_solver).nfe(int(n)))
        return {"w_stiff": float(cfg.w_stiff), "w_con": 0.5 if cfg.w_con is None else float(cfg.w_con),
                "scaling": cfg.erk_scaling or "z2", "trust": cfg.erk_trust}

    # ------------------------------------------------------------------ shared step pieces
    def _erk_call_step(self, stock: type, a: dict[str, Any]) -> Any:
        """Run the stock ``step`` (as a dict output) and let the subclass replace its ``prev_sample``."""
        return_dict = a.pop("return_dict")
        if self.step_index is None:
            self._init_step_index(a["timestep"])
        out = self._erk_step(stock, a)
        return out if return_dict else out.to_tuple()

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        """Call ``stock.step(self, **a, return_dict=True)``, correct ``out.prev_sample`` in place, return ``out``."""
        raise NotImplementedError

    def _erk_correct(self, x_next: Tensor, pair: ErkPair | None, step: int, alpha_next: float = 1.0) -> Tensor:
        """Eq. 19 on the proposal ``x_next`` (state scaled by ``alpha_next``; the pair is in EDM units)."""
        if pair is None:
            return x_next
        st = self.erk_setting()
        x_edm = x_next if alpha_next == 1.0 else x_next / alpha_next
        corr = erk_guid(x_edm, pair, st["w_stiff"], st["w_con"], st["scaling"], st["trust"])
        on = st["w_stiff"] > 0
        self.erk_history.append({"step": step, "rho": corr.rho, "beta": corr.beta,
                                 "correction_norm": corr.norm if on else torch.zeros_like(corr.norm)})
        if not on:
            return x_next
        return (corr.x if alpha_next == 1.0 else corr.x * alpha_next).to(x_next.dtype)


class _TwoStageERK(_ERKScheduler):
    """Heun-like schedulers: ``step`` is called twice per solver step (``order = 2``).

    The first sub-step evaluates at sigma_i, the second at the step's second node; the
    correction is applied after the second. Starting on a second sub-step raises.
    """

    def _erk_second_sigma(self, idx: int) -> float:
        """The sigma at which the second sub-step's model call was made (Heun: sigma_{i+1})."""
        return float(self.sigmas[idx])

    def _erk_drift(self, a: dict[str, Any], out: Any, sigma: float) -> Tensor:
        return (a["sample"] - out.pred_original_sample) / sigma  # (x - D) / sigma, Eq. 1

    def _erk_pair(self, start: tuple[Tensor, Tensor, float], second: tuple[Tensor, Tensor]) -> ErkPair | None:
        raise NotImplementedError

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        idx = self.step_index
        first = self.state_in_first_order
        if first and idx % 2 == 1:
            raise ValueError(
                f"{type(self).__name__} was started on a second-order sub-step (step_index {idx} is odd); "
                "its steps start at even indices: call set_timesteps again, and for img2img use "
                "set_begin_index(t_start * scheduler.order)"
            )
        sigma = float(self.sigmas[idx]) if first else self._erk_second_sigma(idx)
        out = stock.step(self, **a, return_dict=True)
        f = self._erk_drift(a, out, sigma)
        if first:
            self._erk["start"] = (a["sample"], f, float(self.sigmas[idx]) - float(self.sigmas[idx + 1]))
            return out
        start = self._erk.pop("start", None)
        if start is None:
            return out
        out.prev_sample = self._erk_correct(out.prev_sample, self._erk_pair(start, (a["sample"], f)), idx // 2)
        return out


class _HeunPair:
    """Heun's pair (Table 9): x_i with f_i against the previous step's Euler point with its drift."""

    _erk: dict[str, Any]

    def _erk_pair(self, start: tuple[Tensor, Tensor, float], second: tuple[Tensor, Tensor]) -> ErkPair | None:
        prev = self._erk.get("euler")
        self._erk["euler"] = second  # the point the second sub-step evaluated: this step's Euler point
        return None if prev is None else ErkPair(start[0], start[1], prev[0], prev[1], h=start[2])


class ERKHeunDiscreteScheduler(_HeunPair, _TwoStageERK, HeunDiscreteScheduler):
    """``HeunDiscreteScheduler`` + ERK-Guid (``w_stiff``, ``w_con``, ``erk_scaling``; App. B.3).

    All of Heun's config keys are accepted (``prediction_type`` epsilon / v_prediction / sample,
    Karras / exponential / beta sigmas, timestep spacing). ``set_timesteps`` also accepts custom
    ``sigmas`` (decreasing, positive, optionally ending in 0), which stock Heun does not.
    """

    _erk_solver = "heun"

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        num_train_timesteps: int | None = None,
        timesteps: list[int] | None = None,
        sigmas: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Heun's ``set_timesteps``, plus custom ``sigmas`` (N decreasing positive values, a final 0 optional)."""
        self._erk_reset()
        if sigmas is None:
            super().set_timesteps(num_inference_steps, device, num_train_timesteps, timesteps)
            return
        if num_inference_steps is not None or timesteps is not None:
            raise ValueError("pass only one of num_inference_steps, timesteps or sigmas")
        s = np.asarray(torch.as_tensor(sigmas).detach().cpu().double().numpy(), dtype=np.float64).ravel()
        if s.size and s[-1] == 0:
            s = s[:-1]
        if s.size < 1 or not np.isfinite(s).all() or (s <= 0).any() or (np.diff(s) >= 0).any():
            raise ValueError(f"sigmas must be strictly decreasing positive values (a final 0 allowed), got {s.tolist()}")
        log_sigmas = np.log((((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).numpy())
        t = np.array([self._sigma_to_t(v, log_sigmas) for v in s], dtype=np.float32)
        self.num_inference_steps = len(s)
        sig = torch.from_numpy(np.concatenate([s, [0.0]]).astype(np.float32))
        self.sigmas = torch.cat([sig[:1], sig[1:-1].repeat_interleave(2), sig[-1:]]).to("cpu")
        ts = torch.from_numpy(t)
        self.timesteps = torch.cat([ts[:1], ts[1:].repeat_interleave(2)]).to(device=device, dtype=torch.float32)
        self.prev_derivative = None
        self.dt = None
        self._step_index = None
        self._begin_index = None


class ERKKDPM2DiscreteScheduler(_TwoStageERK, KDPM2DiscreteScheduler):
    """``KDPM2DiscreteScheduler`` (DPM-Solver-2, k-diffusion ``sample_dpm_2``) + ERK-Guid.

    Pair (Table 9, DPM-Solver (2S)): the step's start ``(x_i, f_i)`` against the log-sigma
    midpoint ``(x_mid, f_mid)``, ``h = sigma_i - sigma_{i+1}``, beta in {0, 1}.
    """

    _erk_solver = "dpm2"

    def _erk_second_sigma(self, idx: int) -> float:
        return float(self.sigmas_interpol[idx])

    def _erk_pair(self, start: tuple[Tensor, Tensor, float], second: tuple[Tensor, Tensor]) -> ErkPair | None:
        return ErkPair(start[0], start[1], second[0], second[1], h=start[2])


class ERKFlowMatchHeunDiscreteScheduler(_HeunPair, _TwoStageERK, FlowMatchHeunDiscreteScheduler):
    """``FlowMatchHeunDiscreteScheduler`` + ERK-Guid, the pair taken in the flow's own variables.

    The state is ``x_t`` itself, the "sigma" is the flow time ``t`` and the drift is the velocity
    ``v = dx_t/dt`` (the model output), so the pair is Heun's (Table 9) for the ODE
    ``dx_t/dt = v``; it equals :func:`erkguid.sample` (solver ``heun``) with the denoiser
    ``D(x, t) = x - t v(x, t)`` over the grid ``t`` (then ``(x - D)/t = v``). The EDM change of
    variables is not used: it is singular at t = 1, where flow sampling starts. Churn
    (``s_churn > 0``) is refused while ERK-Guid is on.
    """

    _erk_solver = "heun"

    def _erk_drift(self, a: dict[str, Any], out: Any, sigma: float) -> Tensor:
        if a.get("s_churn", 0.0) > 0 and self.erk_setting()["w_stiff"] > 0:
            raise ValueError("ERKFlowMatchHeunDiscreteScheduler: s_churn > 0 is not supported with w_stiff > 0 "
                             "(the ERK pair assumes deterministic ODE steps); use s_churn=0")
        return a["model_output"].to(torch.float32)

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        a = {**a, "sample": a["sample"].to(torch.float32)}  # the stock step upcasts too; the pair uses the same values
        return super()._erk_step(stock, a)


class _MultistepERK(_ERKScheduler):
    """Multistep VP schedulers: one ``step`` per solver step; pair = the last two evaluated points, sign -1."""

    def _erk_x0_is_stored(self) -> bool:
        """Whether ``model_outputs[-1]`` holds x0 (data prediction) rather than eps."""
        return True

    def _erk_alpha_sigma(self, idx: int) -> tuple[float, float]:
        """(alpha, EDM sigma = sigma_t / alpha) of ``self.sigmas[idx]`` from the scheduler's own conversion."""
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(self.sigmas[idx])
        alpha_t, sigma_t = float(alpha_t), float(sigma_t)
        return alpha_t, (sigma_t / alpha_t if alpha_t > 0 else float("inf"))

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        idx = self.step_index
        sample = a["sample"]
        out = stock.step(self, **a, return_dict=True)
        alpha, sigma = self._erk_alpha_sigma(idx)
        m = self.model_outputs[-1]
        if self._erk_x0_is_stored():
            _, sigma_t = self._sigma_to_alpha_sigma_t(self.sigmas[idx])
            eps = (sample.to(torch.float32) - alpha * m.to(torch.float32)) / float(sigma_t)
        else:
            eps = m.to(torch.float32)
        x = sample.to(torch.float32) / alpha  # EDM state; its drift (x - D) / sigma is exactly eps
        prev = self._erk.get("prev")
        self._erk["prev"] = (x, eps, sigma)
        alpha_next, sigma_next = self._erk_alpha_sigma(idx + 1)
        if prev is None or not sigma_next > 0 or sigma_next == sigma:  # to 0, or a zero-length (identity) step
            return out
        pair = ErkPair(x, eps, prev[0], prev[1], h=prev[2] - sigma, sign=-1.0)
        x_next = self._erk_correct(out.prev_sample, pair, idx, alpha_next)
        self._erk_after_correction(out.prev_sample, x_next)
        out.prev_sample = x_next
        return out

    def _erk_after_correction(self, raw: Tensor, corrected: Tensor) -> None:
        """Hook: UniPC carries the correction into its next corrector."""


class ERKDPMSolverMultistepScheduler(_MultistepERK, DPMSolverMultistepScheduler):
    """``DPMSolverMultistepScheduler`` + ERK-Guid (multistep pair, sign -1, as erkguid's ``dpmpp_2m``).

    With the defaults (``dpmsolver++``, order 2, midpoint) it equals :func:`erkguid.sample`
    with solver ``dpmpp_2m``. The SDE variants are refused while ERK-Guid is on.
    """

    _erk_solver = "dpmpp_2m"

    def _erk_x0_is_stored(self) -> bool:
        return self.config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++")

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        if self.config.algorithm_type.startswith("sde") and self.erk_setting()["w_stiff"] > 0:
            raise ValueError(f"ERKDPMSolverMultistepScheduler: algorithm_type={self.config.algorithm_type!r} is "
                             "stochastic; ERK-Guid needs an ODE solver (dpmsolver++ or dpmsolver), or w_stiff=0")
        return super()._erk_step(stock, a)


class ERKUniPCMultistepScheduler(_MultistepERK, UniPCMultistepScheduler):
    """``UniPCMultistepScheduler`` + ERK-Guid (pair at the evaluated predictor points, sign -1).

    With the defaults (bh2, order 2, data prediction) it equals :func:`erkguid.sample` with
    solver ``unipc``: the correction added to a predictor is carried into the next corrector
    (which otherwise recomputes the state from the previous one and would drop it).
    """

    _erk_solver = "unipc"

    def _erk_x0_is_stored(self) -> bool:
        return bool(self.predict_x0)

    def _erk_after_correction(self, raw: Tensor, corrected: Tensor) -> None:
        self._erk["delta"] = corrected - raw if self.erk_setting()["w_stiff"] > 0 else None

    def _erk_step(self, stock: type, a: dict[str, Any]) -> Any:
        self._erk["delta_now"] = self._erk.pop("delta", None)  # used by this step's corrector only, if it runs
        try:
            return super()._erk_step(stock, a)
        finally:
            self._erk.pop("delta_now", None)

    def multistep_uni_c_bh_update(self, *args: Any, **kwargs: Any) -> Tensor:
        """UniC (stock), plus the ERK correction the previous step added to this predictor."""
        x = super().multistep_uni_c_bh_update(*args, **kwargs)
        delta = self._erk.get("delta_now")
        return x if delta is None else x + delta.to(x.dtype)


class ERKDEISMultistepScheduler(_MultistepERK, DEISMultistepScheduler):
    """``DEISMultistepScheduler`` (DEIS, log-rho Adams-Bashforth) + ERK-Guid (DEIS's pair of Table 9, sign -1).

    Equals :func:`erkguid.sample` with solver ``deis`` and ``solver_options=scheduler.erk_solver_options()``
    (``mode="logrho"``, the scheduler's ``solver_order`` and ``lower_order_final``) over the scheduler's grid,
    which ends at diffusers' ``sigma_last > 0``. Karras/exponential/beta grids repeat their last sigma: diffusers
    spends its final step there (an identity, never corrected), so with ``lower_order_final`` (below 15 steps)
    it lowers the order of one real step fewer than ``erkguid.sample`` on the de-duplicated grid.
    """

    _erk_solver = "deis"

    def _erk_x0_is_stored(self) -> bool:
        return self.config.algorithm_type != "deis"

    def erk_solver_options(self) -> dict[str, Any]:
        return {"mode": "logrho", "order": int(self.config.solver_order),
                "lower_order_final": bool(self.config.lower_order_final)}


_VP_ERK = [ERKHeunDiscreteScheduler, ERKKDPM2DiscreteScheduler, ERKDPMSolverMultistepScheduler,
           ERKUniPCMultistepScheduler, ERKDEISMultistepScheduler]
_FLOW_ERK = [ERKFlowMatchHeunDiscreteScheduler]


def _register_compatibles() -> None:
    """List the ERK classes in diffusers' namespace and in the ``compatibles`` of the stock schedulers they replace.

    ``SchedulerMixin.compatibles`` resolves names only inside the ``diffusers`` module, so that is
    where the names must live. Idempotent; only adds names, never replaces a diffusers attribute.
    """
    groups = [(_VP_ERK, [getattr(diffusers, e.name) for e in KarrasDiffusionSchedulers if hasattr(diffusers, e.name)]),
              (_FLOW_ERK, [FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler])]
    for erk, stocks in groups:
        names = [c.__name__ for c in erk]
        for c in erk:
            if not hasattr(diffusers, c.__name__):
                setattr(diffusers, c.__name__, c)
        for s in stocks:
            s._compatibles = list(dict.fromkeys([*s._compatibles, *names]))  # a new list on that class only
        for c in erk:
            c._compatibles = list(dict.fromkeys([*_stock(c)._compatibles, _stock(c).__name__, *names]))


_register_compatibles()
