"""Shared checks of the adapters: a per-sample sigma and the network's output shape."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._batch import acc_dtype, append_dims, sigma_vector

__all__ = ["Net", "acc_dtype", "check_output", "col", "sigma_vector"]

Net = Callable[..., Tensor]


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
