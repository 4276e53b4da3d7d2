"""High-accuracy reference solutions of the probability-flow ODE, per sample.

Integrates dx/ds = x - D(x; e^s) in s = log sigma (the drift of Eq. 1 times sigma) with an
adaptive Dormand-Prince 5(4) pair whose step size and error control are per sample (a sample's
reference never depends on its batch), from ``sigma_start`` down to ``sigma_stop``, then takes
x(0) = D(x(sigma_stop); sigma_stop), whose error is O(sigma_stop^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._batch import append_dims, bnorm, take_rows

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980).
_A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
_C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
_B5 = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
_B4 = [5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


@dataclass(frozen=True)
class ReferenceResult:
    x: Tensor  # [B, *S] float64 solution at sigma = 0 (or at sigma_end if given)
    nfe: Tensor  # [B] evaluations spent per sample
    steps: Tensor  # [B] accepted steps per sample


def reference_solve(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigma_start: float,
    *,
    sigma_end: float = 0.0,
    rtol: float = 1e-8,
    atol: float = 1e-9,
    sigma_stop: float = 1e-6,
    max_steps: int = 100_000,
    progress: bool | str = False,
    **extra: Any,
) -> ReferenceResult:
    """Solve the ODE from ``sigma_start`` to ``sigma_end`` (0 by default) in float64, per sample.

    Args:
        denoiser: ``D(x, sigma[B], **extra)``.
        x: states at ``sigma_start``.
        sigma_start: starting noise level (> 0).
        sigma_end: end level; 0 integrates to ``sigma_stop`` and applies the final denoising.
        rtol, atol: per-sample error tolerances (RMS norm over the sample's coordinates).
        sigma_stop: where the log-sigma integration stops when ``sigma_end`` is 0.
        progress: show a progress bar over log sigma, advanced by the slowest sample (a string is its label).
        **extra: passed to the denoiser, sliced per active sample when it is a tensor with a
            leading batch dimension.
    """
    if not sigma_start > max(sigma_end, 0.0):
        raise ValueError(f"sigma_start must exceed sigma_end, got {sigma_start} and {sigma_end}")
    b = x.shape[0]
    dev = x.device
    y = x.detach().to(torch.float64).clone()
    s_end = math.log(sigma_end if sigma_end > 0 else sigma_stop)
    s = torch.full((b,), math.log(sigma_start), dtype=torch.float64, device=dev)
    h = torch.full((b,), -min(0.05, abs(s_end - float(s[0]))), dtype=torch.float64, device=dev)
    nfe = torch.zeros(b, dtype=torch.long, device=dev)
    steps = torch.zeros(b, dtype=torch.long, device=dev)

    def rhs(idx: Tensor, yy: Tensor, ss: Tensor) -> Tensor:
        return yy - denoiser(yy, ss.exp(), **take_rows(extra, idx, b)).to(torch.float64)

    active = torch.arange(b, device=dev)
    k1 = rhs(active, y, s)
    nfe += 1
    span = float(s[0]) - s_end
    bar = tqdm(total=round(span, 3), disable=not progress, desc=progress if isinstance(progress, str) else "reference",
               unit="log-sigma", bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} log-sigma [{elapsed}<{remaining}]")
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        if progress:  # one more device-to-host read per step, only when shown
            bar.update(round(span - (float(s[active].max()) - s_end), 3) - bar.n)
        ya, sa, ha = y[active], s[active], h[active]
        ha = torch.maximum(ha, s_end - sa)  # do not step past the end (h < 0)
        ks = [k1[active]]
        for j in range(1, 7):
            inc = sum(a * kk for a, kk in zip(_A[j], ks))
            ks.append(rhs(active, ya + append_dims(ha, ya.ndim) * inc, sa + _C[j] * ha))
        nfe[active] += 6
        y5 = ya + append_dims(ha, ya.ndim) * sum(c * kk for c, kk in zip(_B5, ks))
        err = append_dims(ha, ya.ndim) * sum((c5 - c4) * kk for c5, c4, kk in zip(_B5, _B4, ks))
        scale = atol + rtol * torch.maximum(ya.abs(), y5.abs())
        e = (err / scale).reshape(len(active), -1).pow(2).mean(1).sqrt()
        ok = e <= 1.0
        acc = active[ok]
        y[acc] = y5[ok]
        s[acc] = sa[ok] + ha[ok]
        k1[acc] = ks[6][ok]  # FSAL
        steps[acc] += 1
        factor = torch.clamp(0.9 * e.clamp_min(1e-12) ** -0.2, 0.2, 5.0)
        h[active] = ha * factor
        active = active[s[active] > s_end + 1e-12]
    else:
        bar.close()
        raise RuntimeError(f"reference_solve did not finish in max_steps={max_steps}")
    bar.update(bar.total - bar.n)
    bar.close()
    if sigma_end == 0:
        sig = torch.full((b,), sigma_stop, dtype=torch.float64, device=dev)
        y = denoiser(y, sig, **extra).to(torch.float64)
        nfe += 1
    return ReferenceResult(y, nfe, steps)


def check_reference(
    denoiser: Callable[..., Tensor], x: Tensor, sigma_start: float, rtol: float = 1e-8, **kw: Any
) -> tuple[ReferenceResult, float]:
    """Solve at ``rtol`` and at ``rtol / 100``; return the tighter solve and the max per-sample
    Euclidean distance between the two (the reference's own error bound for the figures).
    ``progress=True`` shows one bar per solve, labelled with its tolerance."""
    show = bool(kw.pop("progress", False))
    loose = reference_solve(denoiser, x, sigma_start, rtol=rtol, atol=rtol / 10,
                            progress=show and f"reference rtol {rtol:g}", **kw)
    tight = reference_solve(denoiser, x, sigma_start, rtol=rtol / 100, atol=rtol / 1000,
                            progress=show and f"reference rtol {rtol / 100:g}", **kw)
    gap = bnorm(loose.x - tight.x).max()
    return tight, float(gap)
