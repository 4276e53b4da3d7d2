"""``sample``: a whole run of the step engine (:mod:`erkguid.engine`) with callbacks and progress.

The ERK-Guid correction (Eq. 19/63) is applied by the engine to every solver, through the embedded
pair its step returns; no solver applies it itself. On a grid ending in 0 the step that lands on
sigma = 0 is never corrected (it is the final denoising step); a grid may also end at a positive
level, and a run may continue another run's :class:`~erkguid.engine.State`.

Conditioning: pass the denoiser's keywords as ``extra_args={...}`` (k-diffusion's convention; its keys
never collide with sampler options) or, for existing callers, as ``**extra`` keywords; a key given in
both raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from . import _validate
from ._validate import NonFiniteError
from .engine import Run, State, conditioning
from .guidance import ErkProj
from .solvers import Solver

Callback = Callable[[dict[str, Any]], None]

__all__ = ["Callback", "NonFiniteError", "Trace", "sample", "sample_erk_proj"]


def sample(
    denoiser: Callable[..., Tensor],
    x: Tensor | State,
    sigmas: Tensor | Sequence[float],
    *,
    solver: str | Solver = "heun",
    w_stiff: float = 0.0,
    w_con: float = 0.0,
    scaling: str = "z2",
    trust: float | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    solver_options: Mapping[str, Any] | None = None,
    seeds: Sequence[int] | Tensor | None = None,
    extra_args: Mapping[str, Any] | None = None,
    check_finite: str = "step",
    check_divergence: bool = True,
    **extra: Any,
) -> Tensor:
    """Sample by integrating the probability-flow ODE from ``sigmas[0]`` to ``sigmas[-1]`` with ERK-Guid.

    Args:
        denoiser: EDM ``D(x, sigma, **cond)`` (x-prediction), ``sigma`` a per-sample ``[B]`` tensor.
        x: state at noise level ``sigmas[0]``, shape ``[B, *S]``, or an :class:`~erkguid.engine.State`
            to continue (``sigmas`` then starts at the state's level).
        sigmas: strictly decreasing grid ending in 0 (e.g. :func:`erkguid.edm_sigmas`) or at a positive
            level (the state at that level is returned; k-diffusion semantics).
        solver: a registered solver name (``erkguid.SOLVERS``) or a :class:`Solver`.
        w_stiff: ERK-Guid strength (Eq. 19); 0 gives the plain solver, bit for bit.
        w_con: stiffness threshold of the gate beta = 1[rho > w_con].
        scaling: modulation of z (App. B.3): ``z2`` (paper), ``abs``, ``alpha``, or ``sat`` (z^2 / (1 + z^2)).
        trust: bound each correction's norm by ``trust * ||dx||`` of its pair (``None``: the paper's formula);
            see :func:`erkguid.correction.erk_guid`. :func:`erkguid.recommended` gives evidence-backed settings.
        callback: called after every step with a dict: ``x``, ``i``, ``sigma``, ``sigma_next``,
            ``denoised``, ``nfe`` (cumulative, per sample) and, where the step had an ERK pair, per-sample
            ``rho``, ``beta`` and ``correction_norm`` (``None`` otherwise), and ``pair``: the step's
            :class:`ErkPair` or ``None``. See :class:`Trace`.
        progress: show a tqdm progress bar.
        solver_options: keyword options of the solver's step (see ``Solver.options``).
        seeds: one seed per sample for stochastic solvers (noise depends only on the seed).
        extra_args: the denoiser's conditioning keywords (class labels, text embeddings, ...).
        check_finite: ``"step"`` (default: one device-to-host sync per step), ``"end"`` or ``"off"``.
        check_divergence: raise :class:`~erkguid.DivergenceError` when the ERK-Guid correction, or the state it
            moved, grows far beyond what sigma allows (docs/validation.md); read in the same sync as the NaN/Inf
            check (``check_finite="step"`` only). ``False`` keeps only the NaN/Inf check.
        **extra: more conditioning keywords, passed through to ``denoiser`` like ``extra_args``.

    Returns:
        The samples at ``sigmas[-1]``, same shape and dtype as ``x``. The state is carried in at least
        float32 (float64 stays float64) whatever the dtype of ``x`` or of the model's output.
    """
    _validate.check_args(denoiser, callback, solver)
    run = Run(
        denoiser, x, sigmas, solver=solver, w_stiff=w_stiff, w_con=w_con, scaling=scaling, trust=trust,
        solver_options=solver_options, seeds=seeds, want_pair=(callback is not None) or None, check_finite=check_finite,
        check_divergence=check_divergence, progress=progress, extra_args=conditioning(extra_args, extra),
    )
    run.warn_stacklevel = 5  # ErkGuidWarning points at sample()'s caller
    for step in run:
        if callback is not None:
            callback(step.info())
        del step  # the next step runs without this one's pair (ERK-Guid's memory bound)
    final = run.state
    return final.x.to(final.dtype)


def sample_erk_proj(
    guided: Any,
    x: Tensor | State,
    sigmas: Tensor | Sequence[float],
    *,
    w_stiff: float = 0.0,
    w_proj: float | None = None,
    **kwargs: Any,
) -> Tensor:
    """``sample`` with ERK-Proj guidance (Eq. 59-61) as an engine layer, and optional ERK-Guid.

    ``guided`` is a :class:`erkguid.guidance.Guided` (``cfg(...)``/``autoguidance(...)``); ``w_proj``
    (default ``w_stiff``, as in Eq. 59) sets eta = exp(-w_proj rho); ``w_stiff`` is the ERK-Guid
    correction strength (Eq. 58), 0 for ERK-Proj alone. The engine hands each evaluation the previous
    step's estimate explicitly. Other arguments as :func:`sample`.
    """
    return sample(ErkProj(guided, w_stiff if w_proj is None else w_proj), x, sigmas, w_stiff=w_stiff, **kwargs)


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
