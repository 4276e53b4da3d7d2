"""Shared checks of the adapters: a per-sample sigma and the network's output shape."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._batch import append_dims

Net = Callable[..., Tensor]


def sigma_vector(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a float64 ``[B]`` tensor on ``x``'s device (a scalar is broadcast)."""
    s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    s = s.reshape(-1)
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma must be a scalar or have one value per sample ({x.shape[0]}), got {s.numel()}")
    if (s < 0).any() or not torch.isfinite(s).all():
        raise ValueError("sigma must be finite and >= 0")
    return s


def col(v: Tensor, x: Tensor) -> Tensor:
    """A per-sample ``[B]`` coefficient shaped to broadcast against ``x`` (accumulation dtype kept)."""
    return append_dims(v, x.ndim)


def check_output(out: object, x: Tensor, what: str) -> Tensor:
    """Unwrap diffusers-style outputs (``.sample``) and check the shape matches ``x``."""
    if not isinstance(out, Tensor) and hasattr(out, "sample"):
        out = out.sample
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        out = out[0]
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} returned {got} for an input of shape {tuple(x.shape)}; expected the input's shape")
    return out


def work_dtype(x: Tensor) -> torch.dtype:
    """Coefficient arithmetic in float64 for float64 states, float32 otherwise."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
