"""Evaluation: one row schema, one evaluation of a sampler configuration, one results file.

``erkguid tune`` and every evidence command (``erkguid demo``, ``bench``, ``guidance``, the paper suite,
``adasde-eval``) are configurations over three things here:

* :func:`evaluate` runs one sampler configuration (:class:`Setting`) with :func:`erkguid.sample` from a fixed,
  per-sample-seeded noise batch and measures what every table reports: the NFE the engine counted, the fraction of
  ERK-Guid-gated steps, the wall time and the per-sample global error against the reference (the exact or converged
  ODE solution from the same noise, :func:`erkguid.metrics.global_error`);
* :class:`Row` is the one row schema: model, solver, steps, measured NFE, the setting, metrics, intervals
  (``name -> (value, lo, hi)``, from :mod:`erkguid.metrics`), seconds and extras; :meth:`Row.flat` is its JSON form;
* :func:`write_results` / :func:`read_results` save and load ``NAME.json`` (+ ``NAME.md``, ``NAME.png``) through
  :mod:`erkguid._io`, stamped with :data:`SCHEMA` and :data:`SCHEMA_VERSION`.

It depends on the library only (the engine, metrics and file I/O); ``erkguid.experiments`` is built on it, never the
other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ._io import atomic_write_json, atomic_write_text, read_json_object
from .metrics import energy_distance, global_error, ratio_ci, sliced_wasserstein
from .sampling import Trace, sample

SCHEMA = "erkguid.results"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """One ERK-Guid setting (``w_stiff = 0``: the plain solver); ``trust`` as in :func:`erkguid.sample` (None: the paper's
    correction, and no ``trust`` key in a row)."""

    w_stiff: float = 0.0
    w_con: float = 0.0
    scaling: str = "z2"
    trust: float | None = None

    @property
    def label(self) -> str:
        if self.w_stiff == 0:
            return "plain"
        return (f"w={self.w_stiff:g},c={self.w_con:g}" + ("" if self.scaling == "z2" else f",{self.scaling}")
                + ("" if self.trust is None else f",trust={self.trust:g}"))


@dataclass
class Evaluated:
    """One sampler run: its samples, per-sample errors vs the reference, engine NFE, gated fraction and wall time."""

    x: Tensor
    err: Tensor
    nfe: float
    gated: float
    seconds: float
    trace: Trace


def evaluate(denoiser: Callable[..., Tensor], x0: Tensor, sigmas: Tensor, reference: Tensor, *, solver: str = "heun",
             setting: Setting = Setting(), run: Callable[..., Tensor] = sample, **kw: Any) -> Evaluated:
    """Run ``run(denoiser, x0, sigmas, solver=, w_stiff=, w_con=, scaling=, [trust=,] callback=Trace(), **kw)``, measure it
    against ``reference`` (the ODE solution from ``x0``). ``run`` defaults to :func:`erkguid.sample`; the NFE is the
    engine's own count (``Trace.nfe``), ``gated`` the fraction of steps with a pair whose correction was applied."""
    tr = Trace()
    t = time.perf_counter()
    trust = {} if setting.trust is None else {"trust": setting.trust}
    x = run(denoiser, x0, sigmas, solver=solver, w_stiff=setting.w_stiff, w_con=setting.w_con, scaling=setting.scaling,
            callback=tr, **trust, **kw)
    sec = time.perf_counter() - t
    gate = tr.beta[~tr.beta.isnan()]
    return Evaluated(x, global_error(x, reference), float(tr.nfe), float((gate != 0).float().mean()) if gate.numel() else 0.0,
                     sec, tr)


def distribution_metrics(x: Tensor, truth: Tensor | None, log_prob: Callable[[Tensor], Tensor] | None = None, *,
                         max_points: int = 4096) -> dict[str, float]:
    """Sliced W2 and energy distance (on at most ``max_points`` samples) to true samples and the mean true log-density
    (NaN where not available)."""
    nan = float("nan")
    return {"sliced_w2": sliced_wasserstein(x, truth) if truth is not None else nan,
            "energy": energy_distance(x, truth, max_points=max_points) if truth is not None else nan,
            "loglik": float(log_prob(x.double()).mean()) if log_prob is not None else nan}


@dataclass
class Row:
    """The one evaluation row. ``intervals`` maps a name to ``(value, lo, hi)``; ``extras`` holds what only one table
    needs (they may override ``setting``'s label, e.g. ``"baseline"``). :meth:`flat` is the JSON form: ``model, solver,
    steps, nfe, setting`` (the label), ``w_stiff, w_con, scaling`` (and ``trust`` when set), the metrics, each interval
    as ``name``, ``name_lo``, ``name_hi``, then ``gated``, ``seconds`` and the extras."""

    model: str
    solver: str
    steps: int
    nfe: float
    setting: Setting
    metrics: dict[str, float | None]
    intervals: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    gated: float | None = 0.0  # None: not recorded (the row's table has no gate column)
    seconds: float | None = 0.0  # None: not timed
    extras: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        st = self.setting
        trust = {} if st.trust is None else {"trust": st.trust}
        out: dict[str, Any] = {"model": self.model, "solver": self.solver, "steps": self.steps, "nfe": self.nfe,
                               "setting": st.label, "w_stiff": st.w_stiff, "w_con": st.w_con, "scaling": st.scaling, **trust,
                               **self.metrics}
        for name, (v, lo, hi) in self.intervals.items():
            out.update({name: v, f"{name}_lo": lo, f"{name}_hi": hi})
        if self.gated is not None:
            out["gated"] = self.gated
        if self.seconds is not None:
            out["seconds"] = self.seconds
        out.update(self.extras)
        return out


def measured_row(model: str, solver: str, steps: int, run: Evaluated, setting: Setting, base: Tensor | None,
                 metrics: dict[str, float], extras: dict[str, Any] | None = None) -> Row:
    """The row of an :func:`evaluate` run: mean and median error, ``metrics``, and the ratio of mean errors vs the per-sample
    errors ``base`` of its baseline with a paired bootstrap interval (:func:`erkguid.metrics.ratio_ci`; NaN without one)."""
    ratio = ratio_ci(run.err, base) if base is not None else (float("nan"),) * 3
    return Row(model, solver, steps, run.nfe, setting, {"err_mean": float(run.err.mean()), "err_median": float(run.err.median()),
                                                        **metrics}, {"err_ratio": ratio}, run.gated, run.seconds, extras or {})


def write_results(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str | None = None,
                  plot: Callable[[Path], Any] | None = None) -> list[str]:
    """Write ``result`` (stamped with the schema) to ``NAME.json`` (strict JSON, atomically), ``markdown`` to ``NAME.md``
    and ``plot(out_dir / "NAME.png")`` (each when given) under ``out_dir`` (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.json"]
    atomic_write_json(files[0], {"schema": SCHEMA, "version": SCHEMA_VERSION, **result})  # NaN / inf are written as null
    if markdown is not None:
        files.append(out / f"{name}.md")
        atomic_write_text(files[-1], markdown if markdown.endswith("\n") else markdown + "\n")
    if plot is not None:
        files.append(out / f"{name}.png")
        plot(files[-1])
    return [str(f) for f in files]


def read_results(path: str | Path) -> dict[str, Any]:
    """A results file written by :func:`write_results` (bounded read, errors name the file); a file of another schema or
    a newer version is a clear error."""
    res = read_json_object(path, what="results file")
    if res.get("schema") != SCHEMA or not isinstance(res.get("version"), int) or res["version"] > SCHEMA_VERSION:
        raise ValueError(f"{path}: not an erkguid results file of schema {SCHEMA!r} version <= {SCHEMA_VERSION} "
                         f"(found schema {res.get('schema')!r}, version {res.get('version')!r})")
    return res
