"""Model-based guidance as a denoiser combinator: CFG, autoguidance, guidance interval, ERK-Proj.

EDM2 form (Karras et al. 2024): D_w = D_ref + w (D_main - D_ref); in drift terms
f^w = f_main + (w - 1) g with g = f_main - f_ref (App. B.4, Eq. 54-55). ``D_ref`` is the
unconditional branch for classifier-free guidance (CFG) and a weaker model for autoguidance (AG).
Because the guided model is just another denoiser, ERK-Guid on the guided drift (Eq. 56-58) is
``erkguid.sample(guided, ..., w_stiff=...)`` with any solver.

ERK-Proj (Eq. 59-61) replaces g by g_hat = eta g + (1 - eta) <g, v> v with eta = exp(-w_stiff rho),
using the stiffness rho and direction v of the sampler's previous embedded pair, which the step
engine passes to the layer explicitly (:class:`ErkProj`; :func:`erkguid.sample_erk_proj`). This
module never imports the engine.

NFE: the step engine counts evaluations of the combined denoiser per sample (``Trace.nfe``). The
network cost inside it is the one :class:`NetCounter` mechanism (``guided.counter``, ``Counted(net).counter``):
``calls`` (forward passes) and ``rows`` (batch rows evaluated); ``counter.per_sample(B)`` = rows / B
(CFG costs two per guided evaluation, batched or not; outside the guidance interval only the main branch runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._batch import append_dims, bdot, sigma_vector
from .correction import Estimate

Denoiser = Callable[..., Tensor]


@dataclass
class NetCounter:
    """Network cost: forward passes and batch rows evaluated (both branches, all calls)."""

    calls: int = 0
    rows: int = 0

    def add(self, rows: int) -> None:
        self.calls += 1
        self.rows += rows

    def per_sample(self, batch_size: int) -> float:
        """Network evaluations per sample (what papers call NFE) for a run over ``batch_size`` samples."""
        return self.rows / batch_size

    def reset(self) -> None:
        self.calls = self.rows = 0


class Counted:
    """Wrap any denoiser or network to count its calls: ``Counted(net).counter``."""

    def __init__(self, fn: Denoiser) -> None:
        self.fn, self.counter = fn, NetCounter()

    def __call__(self, x: Tensor, *args: Any, **kw: Any) -> Tensor:
        self.counter.add(x.shape[0])
        return self.fn(x, *args, **kw)


def _rows(v: Any, idx: Tensor, batch: int) -> Any:
    """Conditioning value for the rows ``idx``: per-sample tensors are indexed, [1]-tensors and
    0-dim tensors are expanded, anything else (None, strings) passes through."""
    if not isinstance(v, Tensor):
        return v
    if v.ndim == 0:
        return v.expand(idx.numel())
    if v.shape[0] == batch:
        return v[idx]
    if v.shape[0] == 1:
        return v.expand(idx.numel(), *v.shape[1:])
    raise ValueError(f"conditioning tensor of leading size {v.shape[0]} does not match the batch ({batch}) or 1")


class Guided:
    """D_w = D_ref + w (D_main - D_ref) as a denoiser ``D(x, sigma[B], **cond)`` (Eq. 55).

    Args:
        main: the main (conditional) denoiser.
        ref: the reference denoiser (weaker model for AG); ``None`` uses ``main`` (CFG).
        w: guidance weight (1 = no guidance; EDM2 AG ~ 2-3).
        ref_cond: keyword overrides for the reference branch, e.g. ``{"class_labels": None}``
            or a null label / empty-prompt embedding for CFG. Tensors may have leading size B
            (per sample), 1 or be 0-dim (broadcast).
        interval: ``(sigma_lo, sigma_hi)``: guidance only for sigma in [lo, hi] (Kynkaanniemi et
            al. 2024); elsewhere D_w = D_main and the reference branch is not evaluated.
        batched: evaluate both branches in one call on concatenated inputs (needs ``ref=None``
            and tensor conditioning in both branches).
    """

    def __init__(
        self,
        main: Denoiser,
        ref: Denoiser | None = None,
        w: float = 1.0,
        *,
        ref_cond: Mapping[str, Any] | None = None,
        interval: Sequence[float] | None = None,
        batched: bool = False,
    ) -> None:
        if not callable(main) or (ref is not None and not callable(ref)):
            raise TypeError("main and ref must be denoisers D(x, sigma, **cond)")
        if not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"w must be a finite number, got {w!r}")
        if interval is not None:
            if len(interval) != 2 or not (0 <= interval[0] < interval[1]):
                raise ValueError(f"interval must be (sigma_lo, sigma_hi) with 0 <= lo < hi, got {interval!r}")
            interval = (float(interval[0]), float(interval[1]))
        if batched and ref is not None and ref is not main:
            raise ValueError("batched=True evaluates one network on both branches; it needs ref=None (CFG)")
        self.main, self.ref, self.w = main, ref if ref is not None else main, float(w)
        self.ref_cond = dict(ref_cond or {})
        self.interval, self.batched = interval, batched
        self.counter = NetCounter()

    def active(self, sigma: Tensor) -> Tensor:
        """Per-sample mask of samples whose sigma lies in the guidance interval."""
        if self.w == 1.0:
            return torch.zeros_like(sigma, dtype=torch.bool)
        if self.interval is None:
            return torch.ones_like(sigma, dtype=torch.bool)
        return (sigma >= self.interval[0]) & (sigma <= self.interval[1])

    def branches(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> tuple[Tensor, Tensor]:
        """(D_main, D_ref) at full batch size; D_ref = D_main for samples outside the interval."""
        b = x.shape[0]
        s = sigma_vector(sigma, x, dtype=None)
        idx = self.active(s).nonzero().flatten()
        n = idx.numel()
        d_ref_rows: Tensor | None
        ref_kw = {k: _rows(v, idx, b) for k, v in {**cond, **self.ref_cond}.items()}
        if self.batched and n > 0:
            kw: dict[str, Any] = {}
            for k in set(cond) | set(ref_kw):
                a, r = cond.get(k), ref_kw.get(k)
                if a is None and r is None:
                    kw[k] = None
                elif isinstance(a, Tensor) and isinstance(r, Tensor):
                    kw[k] = torch.cat([_rows(a, torch.arange(b, device=x.device), b), r.to(a.dtype)])
                else:
                    raise ValueError(f"batched=True needs tensor conditioning '{k}' in both branches "
                                     f"(got {type(a).__name__} and {type(r).__name__}); use a null label/embedding")
            out = self.main(torch.cat([x, x[idx]]), torch.cat([s, s[idx]]), **kw)
            self.counter.add(b + n)
            d_main, d_ref_rows = out[:b], out[b:]
        else:
            d_main = self.main(x, s, **cond)
            self.counter.add(b)
            d_ref_rows = None
            if n > 0:
                d_ref_rows = self.ref(x[idx], s[idx], **ref_kw)
                self.counter.add(n)
        d_ref = d_main.clone()
        if d_ref_rows is not None and n > 0:
            d_ref[idx] = d_ref_rows.to(d_main.dtype)
        return d_main, d_ref

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        d_main, d_ref = self.branches(x, sigma, **cond)
        return d_ref + self.w * (d_main - d_ref) if self.w != 1.0 else d_main  # Eq. 55 as written


def cfg(
    net: Denoiser, w: float, uncond: Mapping[str, Any], *, interval: Sequence[float] | None = None, batched: bool = False
) -> Guided:
    """Classifier-free guidance: the same network conditioned (``**cond``) and unconditioned (``uncond``)."""
    return Guided(net, None, w, ref_cond=uncond, interval=interval, batched=batched)


def autoguidance(main: Denoiser, weak: Denoiser, w: float, *, interval: Sequence[float] | None = None) -> Guided:
    """Autoguidance (Karras et al. 2024): guide ``main`` with a weaker version ``weak`` of itself."""
    return Guided(main, weak, w, interval=interval)


class ErkProj:
    """ERK-Proj (Eq. 59-61) as a guidance layer of the step engine: a stateless guided denoiser.

    The engine calls :meth:`layer_call` (``wants_estimate = True``) with the
    :class:`~erkguid.correction.Estimate` (per-sample rho and v, Eq. 56-57) of the previous step's embedded
    pair, or ``None`` before the first pair (then eta = 1: plain guidance); the pair of step i is complete
    only after step i's first evaluation, so step i+1 uses it. It returns the projected output the solver
    integrates and the plain guided output (Eq. 55) from which the engine computes the next estimate, so
    rho and v always come from the plain guided drift. An ``ErkProj`` holds no per-run state and can be
    reused across runs; :func:`erkguid.sample_erk_proj` runs it.
    """

    wants_estimate = True

    def __init__(self, guided: Guided, w_proj: float) -> None:
        if not isinstance(guided, Guided):
            raise TypeError("ErkProj needs a Guided denoiser (cfg(...) or autoguidance(...))")
        if not isinstance(w_proj, (int, float)) or not math.isfinite(w_proj) or w_proj < 0:
            raise ValueError(f"w_proj must be a finite number >= 0, got {w_proj!r}")
        self.guided, self.w_proj = guided, float(w_proj)

    def eta(self, est: Estimate) -> Tensor:
        """Per-sample eta = exp(-w_proj * rho) (Eq. 59)."""
        return torch.exp(-self.w_proj * est.rho)

    def layer_call(self, x: Tensor, sigma: Tensor | float, estimate: Estimate | None, **cond: Any) -> tuple[Tensor, Tensor]:
        """``(D with projected guidance (Eq. 61), plain guided D (Eq. 55))`` at one evaluation."""
        g = self.guided
        d_main, d_ref = g.branches(x, sigma, **cond)
        delta = d_main - d_ref  # -sigma * g of Eq. 54; the projection is linear, so done on D
        plain = d_main + (g.w - 1.0) * delta
        if estimate is None:
            return plain, plain
        v = estimate.v
        if v.shape != x.shape:
            raise ValueError(f"ErkProj got an estimate for shape {tuple(v.shape)} and a state of shape {tuple(x.shape)}")
        eta = append_dims(self.eta(estimate), x.ndim)
        along = append_dims(bdot(delta, v), x.ndim) * v
        delta = (eta * delta.to(v.dtype) + (1 - eta) * along).to(d_main.dtype)
        return d_main + (g.w - 1.0) * delta, plain  # Eq. 61

    def __call__(self, x: Tensor, sigma: Tensor | float, estimate: Estimate | None = None, **cond: Any) -> Tensor:
        return self.layer_call(x, sigma, estimate, **cond)[0]
