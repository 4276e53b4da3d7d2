"""Noise-level grids (k-diffusion convention: strictly decreasing, a final 0 appended).

All grids are float64 1-D tensors of length ``num_steps + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _append_zero(s: Tensor) -> Tensor:
    return torch.cat([s, s.new_zeros(1)])


def _check_range(num_steps: int, sigma_min: float, sigma_max: float) -> None:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if not (0 < sigma_min < sigma_max):
        raise ValueError(
            f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )


def edm_sigmas(
    num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """EDM (Karras et al. 2022, Eq. 5) polynomial grid of ``num_steps`` levels, then 0."""
    _check_range(num_steps, sigma_min, sigma_max)
    if num_steps == 1:
        return _append_zero(torch.tensor([sigma_max], dtype=torch.float64))
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def logsnr_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> Tensor:
    """Grid uniform in log-SNR (= uniform in log sigma), then 0 (DPM-Solver's 'logSNR')."""
    _check_range(num_steps, sigma_min, sigma_max)
    logs = torch.linspace(math.log(sigma_max), math.log(sigma_min), num_steps, dtype=torch.float64)
    return _append_zero(logs.exp())


def vp_fit(sigma_min: float = 0.002, sigma_max: float = 80.0, eps_t: float = 1e-3) -> tuple[float, float]:
    """(beta_d, beta_min) of the VP schedule with sigma(1) = ``sigma_max`` and sigma(``eps_t``) = ``sigma_min``.

    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1); the defaults are diff-sampler's (EDM's
    sigma range, eps_t = 1e-3), which its DEIS-tAB uses to map EDM sigmas to VP time.
    """
    if not 0 < eps_t < 1:
        raise ValueError(f"eps_t must lie in (0, 1), got {eps_t}")
    l_min, l_max = math.log1p(sigma_min**2), math.log1p(sigma_max**2)
    beta_d = 2 * (l_min / eps_t - l_max) / (eps_t - 1)
    return beta_d, l_max - beta_d / 2


def vp_time(sigma: float, beta_d: float, beta_min: float) -> float:
    """VP time t of an EDM sigma: the larger root of beta_d t^2 / 2 + beta_min t = log(1 + sigma^2).

    With the fitted defaults beta_min < 0, so sigma = 0 maps to t = -2 beta_min / beta_d > 0, not 0.
    """
    c = math.log1p(sigma**2)
    r = math.sqrt(beta_min**2 + 2 * beta_d * c)
    return (r - beta_min) / beta_d if beta_min <= 0 else 2 * c / (r + beta_min)  # the form without cancellation


def vp_time_uniform_sigmas(
    num_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    beta_d: float | None = None,
    beta_min: float | None = None,
    eps_t: float = 1e-3,
    rho: float = 1.0,
) -> Tensor:
    """VP 'time-uniform' grid: uniform in VP time t (or in t^(1/rho)), mapped to EDM sigma, then 0.

    sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (Song et al. 2021; EDM Table 1).
    By default (``beta_d = beta_min = None``) the VP parameters are fitted so that t = 1 gives
    ``sigma_max`` and t = ``eps_t`` gives ``sigma_min`` and t runs uniformly over [eps_t, 1]: the
    convention of DPM-Solver-v3 / AMED / AdaSDE (N = 4 levels: [80, 6.9502, 1.2867, 0.002]).
    With explicit ``beta_d`` and ``beta_min`` the grid is uniform between the times whose sigma
    equals ``sigma_max`` and ``sigma_min`` (``eps_t`` is then unused). The end points are exact.
    ``rho`` spaces the levels uniformly in ``t^(1/rho)`` (diff-sampler's ``schedule_rho``: it samples
    DEIS on the time-uniform grid with rho = 2); ``rho = 1`` is uniform in t.
    """
    _check_range(num_steps, sigma_min, sigma_max)
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    if (beta_d is None) != (beta_min is None):
        raise ValueError("beta_d and beta_min must be given together (or both left None to fit them)")
    if beta_d is None:
        beta_d, beta_min = vp_fit(sigma_min, sigma_max, eps_t)
        t_max, t_min = 1.0, eps_t
    else:
        assert beta_min is not None
        t_max, t_min = vp_time(sigma_max, beta_d, beta_min), vp_time(sigma_min, beta_d, beta_min)
    if rho == 1:
        t = torch.linspace(t_max, t_min, num_steps, dtype=torch.float64)
    else:
        t = torch.linspace(t_max ** (1 / rho), t_min ** (1 / rho), num_steps, dtype=torch.float64) ** rho
    s = torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))
    s[0] = sigma_max
    if num_steps > 1:
        s[-1] = sigma_min
    return _append_zero(s)


SCHEDULES = {"edm": edm_sigmas, "logsnr": logsnr_sigmas, "time_uniform": vp_time_uniform_sigmas}


def get_sigmas(name: str, num_steps: int, **kwargs: float) -> Tensor:
    """Look a schedule up by name (``edm``, ``logsnr``, ``time_uniform``)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](num_steps, **kwargs)


def check_sigmas(sigmas: Tensor | Sequence[float], name: str = "sigmas", *, allow_positive_end: bool = False) -> Tensor:
    """Validate a user grid and return it as a float64 CPU tensor.

    Requires a 1-D, finite, strictly decreasing sequence of at least two non-negative values
    whose last entry is exactly 0 (or, with ``allow_positive_end``, any level >= 0: a run that stops
    at sigma_min > 0, k-diffusion semantics) and whose other entries are positive.
    """
    # a Python list is read as float64 (torch.as_tensor would round it to float32 first)
    s = (sigmas if isinstance(sigmas, Tensor) else torch.as_tensor(sigmas, dtype=torch.float64)).detach().to("cpu", torch.float64)
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 values, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError(f"{name} must be finite, got {s.tolist()}")
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
