"""k-diffusion-style sampler functions with ERK-Guid (usable from k-diffusion and ComfyUI code).

Every function has k-diffusion's signature ``sample_erk_X(model, x, sigmas, extra_args=None,
callback=None, disable=None, **options)`` and runs :func:`erkguid.sample` with the erkguid
solver behind ``X``; no solver maths lives here. Conventions kept from k-diffusion:

* ``model(x, sigma_vector, **extra_args)`` returns the denoised x0 (EDM's D(x; sigma));
  ``extra_args`` (ComfyUI: ``model_options``, ``seed``, ``denoise_mask``) go to the model untouched.
* ``sigmas`` is decreasing; it may end in 0 (the usual full run) or at a positive sigma (ComfyUI
  ``SplitSigmas``): the engine then returns the state at that sigma, the last step being an ordinary
  (second-order, corrected) step as in k-diffusion.
* One callback per step, before the state advances (as in k-diffusion), with keys ``x`` (the
  state at ``sigma``), ``i``, ``sigma``, ``sigma_hat`` (= ``sigma``: no churn) and ``denoised``,
  plus erkguid's per-sample ``rho``/``beta``/``correction_norm`` where the step had a pair.

Differences from k-diffusion, by design: no churn (``s_churn`` must be 0; a step never draws
global-RNG noise), the state keeps its dtype (k-diffusion promotes bf16 to fp32 through its
fp32 sigmas), and stochastic erkguid solvers draw per-sample noise from ``seeds`` (default
``extra_args['seed'] + b`` when ComfyUI supplies a seed, else ``0..B-1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..engine import Run
from ..solvers import SOLVERS

#: k-diffusion sampler name -> erkguid solver name. A function ``sample_erk_<name>`` exists for
#: each entry whose solver is registered (see :func:`available`).
KDIFF_NAMES: dict[str, str] = {"heun": "heun", "dpm_2": "dpm2", "dpmpp_2m": "dpmpp_2m", "deis": "deis"}

DEFAULT_W_STIFF = 1.0  # paper, Table 3 (32 steps) / App. D
DEFAULT_W_CON = 0.5  # paper, Tables 2-3


def _default_seeds(extra_args: dict[str, Any], batch: int) -> list[int]:
    base = extra_args.get("seed", 0)
    base = int(base) if isinstance(base, (int, float)) and base >= 0 else 0
    return [base + b for b in range(batch)]


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
    w_stiff: float = DEFAULT_W_STIFF,
    w_con: float = DEFAULT_W_CON,
    scaling: str = "z2",
    seeds: Sequence[int] | Tensor | None = None,
    solver_options: dict[str, Any] | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    **unused: Any,
) -> Tensor:
    """Run erkguid solver ``solver`` with ERK-Guid (Eq. 19) over a k-diffusion sigma list.

    ``w_stiff = 0`` gives the plain solver (equal to k-diffusion's ``sample_<name>`` up to
    floating-point rounding). ``s_tmin``/``s_tmax``/``s_noise`` are accepted and ignored (they act
    only with churn); unknown keyword options are ignored as k-diffusion callers (ComfyUI) pass extras.
    """
    if s_churn != 0:
        raise ValueError(f"s_churn must be 0 for ERK-Guid samplers (deterministic ODE steps), got {s_churn!r}")
    extra_args = {} if extra_args is None else extra_args
    s = torch.as_tensor(sigmas).detach().to("cpu", torch.float64)
    sig_in = sigmas if isinstance(sigmas, Tensor) else s
    if seeds is None:
        seeds = _default_seeds(extra_args, x.shape[0])
    run = Run(
        model, x, s, solver=solver, w_stiff=w_stiff, w_con=w_con, scaling=scaling, solver_options=solver_options,
        seeds=seeds, want_pair=callback is not None or None, progress=not disable if disable is not None else True,
        extra_args=extra_args,
    )
    prev = x
    for step in run:
        if callback is not None:
            info = step.info()
            callback({"x": prev, "i": step.i, "sigma": sig_in[step.i], "sigma_hat": sig_in[step.i],
                      "denoised": step.denoised, "rho": info["rho"], "beta": info["beta"],
                      "correction_norm": info["correction_norm"]})
        prev = step.x
    return run.state.x.to(run.state.dtype)


def available() -> list[str]:
    """The k-diffusion names (``heun``, ``dpm_2``, ...) whose erkguid solver is registered."""
    return [k for k, v in KDIFF_NAMES.items() if v in SOLVERS]


def make_sampler(name: str) -> Callable[..., Tensor]:
    """Build ``sample_erk_<name>`` for a k-diffusion sampler name in :data:`KDIFF_NAMES`."""
    if name not in KDIFF_NAMES:
        raise ValueError(f"name must be one of {sorted(KDIFF_NAMES)}, got {name!r}")
    solver = KDIFF_NAMES[name]
    if solver not in SOLVERS:
        raise ValueError(f"erkguid solver {solver!r} (for {name!r}) is not registered; available: {available()}")

    def fn(
        model: Callable[..., Tensor],
        x: Tensor,
        sigmas: Tensor | Sequence[float],
        extra_args: dict[str, Any] | None = None,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        disable: bool | None = None,
        w_stiff: float = DEFAULT_W_STIFF,
        w_con: float = DEFAULT_W_CON,
        **options: Any,
    ) -> Tensor:
        return sample_erk(model, x, sigmas, extra_args, callback, disable, solver=solver, w_stiff=w_stiff, w_con=w_con, **options)

    fn.__name__ = fn.__qualname__ = f"sample_erk_{name}"
    fn.__doc__ = (
        f"k-diffusion-style ``sample_{name}`` with ERK-Guid (erkguid solver {solver!r}); "
        "see :func:`sample_erk` for the options (w_stiff, w_con, scaling, seeds)."
    )
    return fn


SAMPLERS: dict[str, Callable[..., Tensor]] = {f"erk_{k}": make_sampler(k) for k in available()}
globals().update({f"sample_{k}": v for k, v in SAMPLERS.items()})


def __getattr__(name: str) -> Callable[..., Tensor]:
    """``sample_erk_<name>`` for solvers registered after this module was imported."""
    if name.startswith("sample_erk_") and name[len("sample_erk_"):] in KDIFF_NAMES:
        fn = make_sampler(name[len("sample_erk_"):])
        SAMPLERS[name[len("sample_"):]] = fn
        return fn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sample_erk_heun: Callable[..., Tensor] = SAMPLERS["erk_heun"]
