"""Per-sample (batch-wise) reductions, written once.

Every norm and inner product in erkguid goes through these helpers: they reduce over all
non-batch dimensions and accumulate in float32 (or float64 when the input is float64),
whatever the model's dtype, so a sample's result never depends on the rest of its batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Reshape a per-sample tensor ``[B]`` to ``[B, 1, ..., 1]`` with ``ndim`` dimensions."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype for reductions: float64 stays float64, everything else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def on_host(t: Tensor) -> bool:
    """Whether reading ``t``'s values is free: a CPU tensor (on an accelerator it is a device-to-host sync)."""
    return t.device.type == "cpu"


def sigma_vector(sigma: Tensor | float, x: Tensor, *, dtype: torch.dtype | None = torch.float64,
                 positive: bool = False) -> Tensor:
    """``sigma`` (a scalar or one value per sample) as a ``[B]`` tensor on ``x``'s device.

    ``dtype=None`` keeps a floating tensor's dtype (Python floats become torch's default dtype).
    Checks the count and that sigma is finite and >= 0 (> 0 with ``positive=True``), naming ``sigma``.
    The value check runs where it costs no device sync: on Python numbers and CPU tensors. A sigma
    already on an accelerator is not read back (one sync per evaluation), nor while ``torch.compile``
    traces the caller; the sampling loop checks its whole grid once, before the first step.
    """
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        if not (math.isfinite(sigma) and (sigma > 0 if positive else sigma >= 0)):
            raise ValueError(f"sigma must be finite and {'> 0' if positive else '>= 0'}, got {sigma!r}")
        s = torch.full((x.shape[0],), float(sigma), dtype=dtype or torch.get_default_dtype(), device=x.device)
        return s
    s = torch.as_tensor(sigma, dtype=dtype)
    if not s.is_floating_point():
        s = s.double()
    s = s.reshape(-1)
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma must be a scalar or have one value per sample ({x.shape[0]}), got {s.numel()}")
    if on_host(s) and not torch.compiler.is_compiling():  # a traced graph carries no host read
        v = s.detach()
        if not bool(((v > 0 if positive else v >= 0) & (v < math.inf)).all()):  # NaN fails both comparisons
            raise ValueError(f"sigma must be finite and {'> 0' if positive else '>= 0'}, got {v.tolist()[:8]}")
    return s.to(x.device)


def all_finite(t: Tensor) -> Tensor:
    """Device-side bool scalar: no element of ``t`` is NaN or +-Inf (no host read).

    One reduction pass, ``aminmax``, which propagates NaN and keeps +-Inf, instead of an elementwise
    ``isfinite`` mask and its ``all`` (about 15x the time on a CPU).
    """
    if t.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=t.device)
    lo, hi = torch.aminmax(t.detach())
    return torch.isfinite(lo).logical_and(torch.isfinite(hi))


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).to(acc_dtype(x.dtype))


def bdot(a: Tensor, b: Tensor, scratch: Tensor | None = None) -> Tensor:
    """Per-sample inner product ``<a_b, b_b>`` over all non-batch dims -> ``[B]``.

    An elementwise product and a row sum: the reduction order of a row does not depend on the
    batch size (a batched matmul's does), so results are bit-identical alone or in a batch.
    ``scratch``, a tensor the caller gives up, of ``a``'s shape and accumulation dtype, receives the
    product (no new allocation; same values).
    """
    fa, fb = _flat(a), _flat(b)
    if scratch is not None and scratch.dtype == fa.dtype and scratch.shape == a.shape and scratch.is_contiguous():
        return torch.mul(fa, fb, out=scratch.view(fa.shape)).sum(dim=1)
    return (fa * fb).sum(dim=1)


def bnorm(x: Tensor) -> Tensor:
    """Per-sample Euclidean norm over all non-batch dims -> ``[B]``."""
    out: Tensor = torch.linalg.vector_norm(_flat(x), dim=1)
    return out


def bsafe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0`` and exactly 0 elsewhere (no epsilon is added).

    Three ops; when a gradient is tracked, the masked-out lanes divide by 1 instead of 0 so that
    the backward pass sees no 0/0 (same values either way).
    """
    ok = den > 0
    if torch.is_grad_enabled() and (num.requires_grad or den.requires_grad):
        return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))
    return torch.where(ok, num / den, 0.0)


def take_rows(extra: dict[str, Any], idx: Tensor, batch: int) -> dict[str, Any]:
    """Keyword conditioning for the rows ``idx`` of a batch of ``batch``: tensors with a leading
    per-sample dimension are indexed, everything else passes through unchanged."""
    return {k: (v[idx] if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == batch else v) for k, v in extra.items()}
