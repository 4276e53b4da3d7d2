"""diffusers scheduler with ERK-Guid: a drop-in for ``HeunDiscreteScheduler`` (needs ``diffusers``).

``ERKHeunDiscreteScheduler`` runs diffusers' own Heun stages (so ``w_stiff = 0`` reproduces
``HeunDiscreteScheduler`` bit for bit) and applies the shared ERK-Guid correction
(:func:`erkguid.erk_guid`, Eq. 19) after every completed second-order step, with Heun's embedded
pair (Table 9): the step's start ``x_i`` with its drift against the previous step's Euler point
with its drift. Both come from model calls the pipeline already made (zero extra NFE).

Usage::

    pipe.scheduler = ERKHeunDiscreteScheduler.from_config(pipe.scheduler.config, w_stiff=1.0, w_con=0.5)

State: its own cache of the previous step (Euler point and drift) is cleared by ``set_timesteps``
and ``set_begin_index``. Pipelines call ``step`` twice per Heun step (``order = 2``); starting on
the second sub-step (an odd index, e.g. a wrong img2img ``begin_index``) raises a ValueError.
The Euler point used in the pair is the ``sample`` the pipeline passes to the second sub-step,
i.e. the state the model was actually evaluated at (``callback_on_step_end`` may change it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from diffusers import HeunDiscreteScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteSchedulerOutput

from ..correction import SCALINGS, ErkPair, check_strengths, erk_guid

_HeunBase: Any = HeunDiscreteScheduler  # diffusers' classes are untyped for mypy's purposes


class ERKHeunDiscreteScheduler(_HeunBase):
    """``HeunDiscreteScheduler`` + ERK-Guid (``w_stiff``, ``w_con``, ``erk_scaling``; App. B.3).

    All of Heun's config keys are accepted (``prediction_type`` epsilon / v_prediction / sample,
    Karras / exponential / beta sigmas, timestep spacing). ``set_timesteps`` also accepts custom
    ``sigmas`` (decreasing, positive, optionally ending in 0).
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: str = "epsilon",
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "linspace",
        steps_offset: int = 0,
        w_stiff: float = 1.0,
        w_con: float = 0.5,
        erk_scaling: str = "z2",
    ) -> None:
        check_strengths(w_stiff, w_con)
        if erk_scaling not in SCALINGS:
            raise ValueError(f"erk_scaling must be one of {SCALINGS}, got {erk_scaling!r}")
        super().__init__(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end, beta_schedule=beta_schedule,
            trained_betas=trained_betas, prediction_type=prediction_type, use_karras_sigmas=use_karras_sigmas,
            use_exponential_sigmas=use_exponential_sigmas, use_beta_sigmas=use_beta_sigmas, clip_sample=clip_sample,
            clip_sample_range=clip_sample_range, timestep_spacing=timestep_spacing, steps_offset=steps_offset,
        )
        self._erk_reset()

    # ------------------------------------------------------------------ state
    def _erk_reset(self) -> None:
        self._erk_prev: tuple[torch.Tensor, torch.Tensor] | None = None  # previous step's Euler point, its drift
        self._erk_pair: ErkPair | None = None  # pair of the step in progress (formed in its first sub-step)
        #: per completed second-order step: dict(step, rho [B], beta [B], correction_norm [B])
        self.erk_history: list[dict[str, Any]] = []

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start at ``begin_index`` (img2img); clears Heun's stage and the ERK cache."""
        super().set_begin_index(begin_index)
        self.prev_derivative = None
        self.dt = None
        self._erk_reset()

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

    # ------------------------------------------------------------------ step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> HeunDiscreteSchedulerOutput | tuple:
        """One Heun sub-step; after the second sub-step the ERK-Guid correction (Eq. 19) is applied."""
        if self.step_index is None:
            self._init_step_index(timestep)
        idx = self.step_index
        first = self.state_in_first_order
        if first and idx % 2 == 1:
            raise ValueError(
                f"ERKHeunDiscreteScheduler was started on a second-order sub-step (step_index {idx} is odd); "
                "Heun steps start at even indices: call set_timesteps again, and for img2img use "
                "set_begin_index(t_start * scheduler.order)"
            )
        prev_sample, x0 = super().step(model_output, timestep, sample, return_dict=False)
        if first:
            sigma, sigma_next = float(self.sigmas[idx]), float(self.sigmas[idx + 1])
            f = (sample - x0) / sigma
            self._erk_pair = None if self._erk_prev is None else ErkPair(sample, f, *self._erk_prev, h=sigma - sigma_next)
        else:
            sigma_next = float(self.sigmas[idx])  # the second sub-step evaluates the model at sigma_{i+1}
            if self._erk_pair is not None:
                corr = erk_guid(prev_sample, self._erk_pair, self.config.w_stiff, self.config.w_con, self.config.erk_scaling)
                if self.config.w_stiff > 0:
                    prev_sample = corr.x
                self.erk_history.append(
                    {"step": idx // 2, "rho": corr.rho, "beta": corr.beta,
                     "correction_norm": corr.norm if self.config.w_stiff > 0 else torch.zeros_like(corr.norm)}
                )
            self._erk_prev = (sample, (sample - x0) / sigma_next)
            self._erk_pair = None
        if not return_dict:
            return (prev_sample, x0)
        return HeunDiscreteSchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0)
