"""The sampling loop: one place for validation, NFE counting, ERK-Guid, callbacks and progress.

``sample`` runs any registered solver over a sigma grid. The ERK-Guid correction (Eq. 19/63) is
applied here, to every solver, through the embedded pair its step returns; no solver applies
it itself. The step that lands on sigma = 0 is never corrected (it is the final denoising step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._batch import acc_dtype
from .correction import SCALINGS, check_strengths, erk_guid
from .noise import PerSampleNoise
from .schedules import check_sigmas
from .solvers import Solver, StepContext, get_solver

Callback = Callable[[dict[str, Any]], None]


class NonFiniteError(FloatingPointError):
    """The denoiser (or a step) produced NaN or Inf; the message names the step index."""


def make_denoise(
    denoiser: Callable[..., Tensor], x0: Tensor, extra: Mapping[str, Any], counter: dict[str, int]
) -> Callable[[Tensor, float], Tensor]:
    """Wrap a user denoiser: per-sample sigma ``[B]``, shape and finiteness checks, NFE count.

    ``counter['step']`` is read for error messages and ``counter['nfe']`` incremented per call.
    """
    sig_dtype = acc_dtype(x0.dtype)

    def denoise(x: Tensor, sigma: float) -> Tensor:
        s = torch.full((x.shape[0],), float(sigma), dtype=sig_dtype, device=x.device)
        out = denoiser(x, s, **extra)
        counter["nfe"] += 1
        step = counter["step"]
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"denoiser returned shape {got} for input of shape {tuple(x.shape)} at step {step}; "
                "it must return D(x; sigma) with the shape of x"
            )
        if not torch.isfinite(out).all():
            raise NonFiniteError(
                f"denoiser returned NaN/Inf at step {step} (sigma={float(sigma):.6g}); "
                "check the model, its dtype and the sigma range"
            )
        return out.to(x.dtype)

    return denoise


def _check_x(x: Any) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError("x must be a floating-point tensor of shape [B, ...] with B >= 1")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN/Inf")


def sample(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    solver: str | Solver = "heun",
    w_stiff: float = 0.0,
    w_con: float = 0.0,
    scaling: str = "z2",
    callback: Callback | None = None,
    progress: bool = False,
    solver_options: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | Tensor | None = None,
    **extra: Any,
) -> Tensor:
    """Sample by integrating the probability-flow ODE from ``sigmas[0]`` to 0 with ERK-Guid.

    Args:
        denoiser: EDM ``D(x, sigma, **extra)`` (x-prediction), ``sigma`` a per-sample ``[B]`` tensor.
        x: state at noise level ``sigmas[0]``, shape ``[B, *S]``.
        sigmas: strictly decreasing grid ending in 0 (e.g. :func:`erkguid.edm_sigmas`).
        solver: a registered solver name (``erkguid.SOLVERS``) or a :class:`Solver`.
        w_stiff: ERK-Guid strength (Eq. 19); 0 gives the plain solver, bit for bit.
        w_con: stiffness threshold of the gate beta = 1[rho > w_con].
        scaling: modulation of z (App. B.3): ``z2`` (paper), ``abs`` or ``alpha``.
        callback: called after every step with a dict: ``x``, ``i``, ``sigma``, ``sigma_next``,
            ``denoised``, ``nfe`` (cumulative) and, where the step had an ERK pair, per-sample
            ``rho``, ``beta`` and ``correction_norm`` (``None`` otherwise), and ``pair``: the step's
            :class:`ErkPair` or ``None`` (ERK-Proj reads it). See :class:`Trace`.
        progress: show a tqdm progress bar.
        solver_options: keyword options of the solver's step (see ``Solver.options``).
        seeds: one seed per sample for stochastic solvers (noise depends only on the seed).
        **extra: passed through to ``denoiser`` (class labels, text embeddings, ...).

    Returns:
        The samples at sigma = 0, same shape and dtype as ``x``. The state is carried in at least
        float32 (float64 stays float64) whatever the dtype of ``x`` or of the model's output.
    """
    _check_x(x)
    grid = check_sigmas(sigmas)
    check_strengths(w_stiff, w_con)
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    spec = get_solver(solver)
    options = dict(solver_options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"solver_options {unknown} not accepted by solver {spec.name!r}; allowed: {sorted(spec.options)}")
    if spec.prepare is not None:
        options = spec.prepare(options, grid)
    noise = None
    if seeds is not None:
        noise = PerSampleNoise(seeds, x.device)
        if len(noise) != x.shape[0]:
            raise ValueError(f"seeds holds {len(noise)} seeds for a batch of {x.shape[0]}")

    out_dtype = x.dtype
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # the state never lives in fp16/bf16
    counter = {"nfe": 0, "step": 0}
    guide = w_stiff > 0
    ctx = StepContext(make_denoise(denoiser, x, extra, counter), grid, noise, want_pair=guide or callback is not None,
                      reduce_pair=guide and callback is None)  # only ERK-Guid reads the pair: fold it at once
    carry: Any = None
    n = grid.numel() - 1
    for i in tqdm(range(n), disable=not progress, desc=f"{spec.name}{' +ERK' if guide else ''}", leave=False):
        counter["step"] = i
        out = spec.step(ctx, i, x, carry, **options)
        x_next, stats = out.x, None
        if out.pair is not None and grid[i + 1] > 0 and (guide or callback is not None):
            corr = erk_guid(x_next, out.pair, w_stiff, w_con, scaling)
            stats = corr
            if guide:
                x_next = corr.x
        if not torch.isfinite(x_next).all():
            raise NonFiniteError(f"the solver state became NaN/Inf at step {i} (sigma={float(grid[i]):.6g})")
        if callback is not None:
            callback(
                {
                    "x": x_next,
                    "i": i,
                    "sigma": float(grid[i]),
                    "sigma_next": float(grid[i + 1]),
                    "denoised": out.denoised,
                    "nfe": counter["nfe"],
                    "rho": None if stats is None else stats.rho,
                    "beta": None if stats is None else stats.beta,
                    "correction_norm": None if stats is None else (stats.norm if guide else torch.zeros_like(stats.norm)),
                    "pair": out.pair,
                }
            )
        x, carry = x_next, out.carry
        del out, stats, x_next  # release the step's pair and proposal before the next step
    return x.to(out_dtype)


class Trace:
    """A callback that records per-step, per-sample diagnostics of a run.

    After ``sample(..., callback=trace)``: ``trace.nfe`` (total evaluations), ``trace.sigmas``
    (list of the steps' start sigmas) and ``trace.rho``, ``trace.beta``, ``trace.correction_norm``
    as float tensors ``[num_steps, B]`` with NaN where a step had no pair.
    """

    def __init__(self) -> None:
        self.nfe = 0
        self.sigmas: list[float] = []
        self._rows: dict[str, list[Tensor | None]] = {"rho": [], "beta": [], "correction_norm": []}
        self._batch = 0

    def __call__(self, info: dict[str, Any]) -> None:
        self.nfe = info["nfe"]
        self.sigmas.append(info["sigma"])
        self._batch = info["x"].shape[0]
        for k, rows in self._rows.items():
            rows.append(None if info[k] is None else info[k].detach().float().cpu())

    def _stack(self, key: str) -> Tensor:
        rows = self._rows[key]
        nan = torch.full((self._batch,), float("nan"))
        return torch.stack([nan if r is None else r for r in rows]) if rows else torch.empty(0, 0)

    @property
    def rho(self) -> Tensor:
        return self._stack("rho")

    @property
    def beta(self) -> Tensor:
        return self._stack("beta")

    @property
    def correction_norm(self) -> Tensor:
        return self._stack("correction_norm")
