"""VP (DDPM-family) models as EDM denoisers: epsilon-, v- and x0-prediction.

A VP state is x_vp = alpha x0 + s eps with alpha^2 + s^2 = 1, so sigma = s / alpha and the
EDM state is x = x_vp / alpha = x0 + sigma eps; equivalently x_vp = x / sqrt(1 + sigma^2). The
adapter does that input scaling once, looks up the network time for sigma, and converts the
prediction: eps -> D = x - sigma eps; v = alpha eps - s x0 -> D = alpha x_vp - s v; x0 -> D = x0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ._common import Net, acc_dtype, check_output, col, sigma_vector

PREDICTIONS = ("epsilon", "v_prediction", "sample")


class VPSchedule(Protocol):
    """Maps sigma ``[B]`` (float64) to the network's time input ``[B]``."""

    def sigma_to_t(self, sigma: Tensor) -> Tensor: ...


class DiscreteVPSchedule:
    """A discrete DDPM schedule given by ``alphas_cumprod`` (index t = 0..T-1).

    sigma_t = sqrt((1 - abar_t) / abar_t). :meth:`sigma_to_t` interpolates t linearly in
    log sigma between neighbouring training sigmas (k-diffusion's ``DiscreteSchedule``); sigmas
    outside [sigma_min, sigma_max] are clamped to the end indices. ``quantize=True`` rounds
    t to the nearest integer for networks that only accept integer timesteps.
    """

    def __init__(self, alphas_cumprod: Tensor | Sequence[float], quantize: bool = False) -> None:
        a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if a.numel() < 2 or not ((a > 0) & (a < 1)).all():
            raise ValueError("alphas_cumprod must hold >= 2 values in (0, 1)")
        if not (a[1:] < a[:-1]).all():
            raise ValueError("alphas_cumprod must be strictly decreasing")
        self.alphas_cumprod = a
        self.sigmas = ((1 - a) / a).sqrt()
        self.log_sigmas = self.sigmas.log()
        self.quantize = quantize
        self._tables: dict[torch.device, Tensor] = {}

    def _log_sigmas(self, device: torch.device) -> Tensor:
        """``log_sigmas`` on ``device``, copied there once (no host-to-device copy per evaluation)."""
        if device not in self._tables:
            self._tables[device] = self.log_sigmas.to(device)
        return self._tables[device]

    @classmethod
    def from_betas(
        cls,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        trained_betas: Sequence[float] | None = None,
        quantize: bool = False,
    ) -> DiscreteVPSchedule:
        """Build from DDPM betas (diffusers' ``beta_schedule`` names or explicit ``trained_betas``)."""
        if trained_betas is not None:
            betas = torch.as_tensor(trained_betas, dtype=torch.float64)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "squaredcos_cap_v2":  # cosine schedule (Nichol & Dhariwal 2021), betas capped at 0.999
            i = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
            abar = torch.cos((i + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        else:
            raise ValueError(
                "beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2' (or pass trained_betas), "
                f"got {beta_schedule!r}"
            )
        return cls(torch.cumprod(1 - betas, 0), quantize=quantize)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        ls = sigma.to(torch.float64).clamp_min(1e-300).log()
        table = self._log_sigmas(ls.device)
        hi = torch.searchsorted(table, ls).clamp(1, table.numel() - 1)
        lo = hi - 1
        w = ((ls - table[lo]) / (table[hi] - table[lo])).clamp(0, 1)
        t = lo.to(torch.float64) + w
        return t.round() if self.quantize else t

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Inverse of :meth:`sigma_to_t` on [0, T-1]: log sigma interpolated linearly in t."""
        t = t.to(torch.float64).clamp(0, self.log_sigmas.numel() - 1)
        table = self._log_sigmas(t.device)
        lo = t.floor().long().clamp(max=table.numel() - 2)
        w = t - lo
        return ((1 - w) * table[lo] + w * table[lo + 1]).exp()


class LinearVPSchedule:
    """The continuous linear-beta VP schedule (Song et al. 2021): beta(t) = b0 + t (b1 - b0), t in (0, 1].

    abar(t) = exp(-b0 t - (b1 - b0) t^2 / 2), sigma(t) = sqrt(1/abar - 1); the inverse is
    t = (sqrt(b0^2 + 2 (b1 - b0) log(1 + sigma^2)) - b0) / (b1 - b0). The network receives
    ``t * t_scale`` (e.g. ``t_scale=999`` for networks trained on DDPM-style labels).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_scale: float = 1.0) -> None:
        if not (0 <= beta_min < beta_max):
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.t_scale = float(beta_min), float(beta_max), float(t_scale)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        t = t.to(torch.float64)
        return torch.expm1(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t).sqrt()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        b0, bd = self.beta_min, self.beta_max - self.beta_min
        t = ((b0 * b0 + 2 * bd * torch.log1p(sigma.to(torch.float64) ** 2)).sqrt() - b0) / bd
        return t * self.t_scale


class VPDenoiser:
    """Wrap a VP network ``net(x_vp, t[B], **cond)`` as ``D(x, sigma[B], **cond)``.

    Args:
        net: the network; returns epsilon, v or x0 (``prediction``), shaped like its input.
        schedule: a :class:`DiscreteVPSchedule` or :class:`LinearVPSchedule` (sigma -> t).
        prediction: ``epsilon``, ``v_prediction`` or ``sample`` (diffusers' names).
        net_dtype: dtype the network runs in; default the state's dtype.
        t_dtype: dtype of the time input (default: float64 for float64 states, else float32; some
            nets want ``torch.long`` together with ``DiscreteVPSchedule(quantize=True)``).
    """

    def __init__(
        self,
        net: Net,
        schedule: VPSchedule,
        prediction: str = "epsilon",
        net_dtype: torch.dtype | None = None,
        t_dtype: torch.dtype | None = None,
    ) -> None:
        if not callable(net):
            raise TypeError("net must be callable as net(x_vp, t, **cond)")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not hasattr(schedule, "sigma_to_t"):
            raise TypeError("schedule must provide sigma_to_t(sigma) (DiscreteVPSchedule or LinearVPSchedule)")
        self.net, self.schedule, self.prediction = net, schedule, prediction
        self.net_dtype, self.t_dtype = net_dtype, t_dtype

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        s = sigma_vector(sigma, x)
        wd = acc_dtype(x.dtype)
        alpha = (1 / (1 + s * s).sqrt()).to(wd)  # c_in: x_vp = alpha * x
        x_vp = col(alpha, x) * x.to(wd)
        t = self.schedule.sigma_to_t(s).to(self.t_dtype or wd)
        out = check_output(self.net(x_vp.to(self.net_dtype or x.dtype), t, **cond), x, "net").to(wd)
        if self.prediction == "epsilon":
            d = x.to(wd) - col(s.to(wd), x) * out
        elif self.prediction == "v_prediction":
            d = col(alpha, x) * x_vp - col((s * alpha).to(wd), x) * out
        else:
            d = out
        return d.to(x.dtype)


def vp_alpha_sigma(sigma: float) -> tuple[float, float]:
    """(alpha, s) of the VP state at EDM noise level sigma: alpha = 1/sqrt(1+sigma^2), s = sigma alpha."""
    a = 1 / math.sqrt(1 + sigma * sigma)
    return a, sigma * a
