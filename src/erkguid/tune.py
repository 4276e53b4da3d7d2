"""``erkguid tune``: the most accurate sampler for a model at an exact NFE budget, and a preset that reproduces it.

The objective exists for every model: the mean global error (:func:`erkguid.metrics.global_error`) against the
model's own high-accuracy reference solve (:func:`erkguid.reference_solve`) from the same noise. The search runs on
calibration seeds and is re-measured on disjoint held-out seeds, against the best plain peer on standard grids, with a
paired bootstrap interval of the ratio of mean errors (:func:`erkguid.metrics.ratio_ci`). Stages, within the budget:

1. every registered solver that spends exactly ``nfe`` evaluations for some step count (from its ``nfe`` formula),
   on the parametric grids (EDM rho, log-SNR, VP time-uniform);
2. a grid fitted to the model for the best solvers: the log-sigma levels themselves (below the fixed sigma_max) by
   coordinate descent on the calibration error (in the spirit of Align Your Steps / GITS, but against the model's own
   ODE); most of the time budget goes here;
3. ERK-Guid on the best configurations so far: :func:`erkguid.recommended` for the solver at this NFE and a grid of
   strength, gate and scaling (Eq. 19), then a trust bound (``trust``) on the best of them;
4. optionally (``distill_iters``) AdaSDE coefficients distilled for the model on the winner's grid.

A preset (:func:`save_preset`) holds everything needed to reproduce the winner; :func:`load_preset` turns it into the
keyword arguments of :func:`erkguid.sample` (with ``sigmas``). A preset never causes unpickling.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._validate import sweep
from .evaluation import Evaluated, Setting, evaluate
from .metrics import ratio_ci, sliced_wasserstein
from .noise import randn_from_seeds
from .recommend import recommended
from .reference import reference_solve
from .resolve import Model, resolve_model
from .sampling import NonFiniteError
from .schedules import check_sigmas, edm_sigmas, logsnr_sigmas, vp_time_uniform_sigmas
from .solvers import SOLVERS, Solver, get_solver

PRESET_FORMAT = "erkguid.preset/1"
CALIB_SEED, HELDOUT_SEED = 0, 1_000_000
# Parametric grid families searched in stage 1; the standard grids of the plain peers are EDM rho=7 and log-SNR.
FAMILIES: dict[str, Callable[[int, float, float], Tensor]] = {
    "edm-rho3": lambda n, lo, hi: edm_sigmas(n, lo, hi, rho=3.0),
    "edm-rho5": lambda n, lo, hi: edm_sigmas(n, lo, hi, rho=5.0),
    "edm-rho7": lambda n, lo, hi: edm_sigmas(n, lo, hi, rho=7.0),
    "edm-rho10": lambda n, lo, hi: edm_sigmas(n, lo, hi, rho=10.0),
    "logsnr": logsnr_sigmas,
    "time-uniform": vp_time_uniform_sigmas,
}
STANDARD_GRIDS = ("edm-rho7", "logsnr")
ERK_GRID = tuple((w, c, s) for s in ("z2", "abs", "sat") for w in (0.25, 0.5, 1.0, 2.0) for c in (0.0, 0.05, 0.5))
TRUST_GRID = (0.1, 0.5, 1.0)  # tried on the best ERK-Guid setting of each configuration (``None`` is the grid's own)


def solver_nfe(spec: Solver, num_steps: int, options: dict[str, Any]) -> int:
    """The solver's exact NFE for ``num_steps`` steps to 0 with ``options`` (the solver contract, ``Solver.nfe``)."""
    return spec.nfe(num_steps, options)


def _safe_nfe(spec: Solver, num_steps: int, options: dict[str, Any]) -> int | None:
    try:
        return solver_nfe(spec, num_steps, options)
    except ValueError:
        return None


def steps_for_nfe(spec: Solver, nfe: int, options: dict[str, Any]) -> int | None:
    """The step count whose declared NFE equals ``nfe`` exactly (``None`` if there is none)."""
    hits = []
    for n in range(1, nfe + 1):
        try:
            if solver_nfe(spec, n, options) == nfe:
                hits.append(n)
        except ValueError:  # a formula that rejects this step count (or these options)
            continue
    return max(hits) if hits else None


def plain_options(spec: Solver) -> dict[str, Any]:
    """The solver's default options, with any stochastic switch off (the objective is the ODE solution)."""
    opts = dict(spec.options or {})
    if "stochastic" in opts:
        opts["stochastic"] = False
    return opts


@dataclass
class Candidate:
    """One sampler configuration: everything :func:`erkguid.sample` needs besides model and noise."""

    solver: str
    solver_options: dict[str, Any]
    sigmas: list[float]
    w_stiff: float = 0.0
    w_con: float = 0.0
    scaling: str = "z2"
    grid: str = ""
    trust: float | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"sigmas": torch.tensor(self.sigmas, dtype=torch.float64), "solver": self.solver,
                "solver_options": dict(self.solver_options),
                "w_stiff": self.w_stiff, "w_con": self.w_con, "scaling": self.scaling, "trust": self.trust}

    @property
    def label(self) -> str:
        trust = "" if self.trust is None else f",trust={self.trust:g}"
        erk = "" if self.w_stiff == 0 else f" +ERK(w={self.w_stiff:g},c={self.w_con:g},{self.scaling}{trust})"
        return f"{self.solver} [{self.grid}]{erk}"


class CountingDenoiser:
    """Counts a denoiser's calls for samplers the engine does not run (k-diffusion peers, independent checks of the
    engine's own count); one call evaluates the whole batch, so calls = NFE per sample."""

    def __init__(self, denoiser: Callable[..., Tensor]) -> None:
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x: Tensor, sigma: Tensor, **kw: Any) -> Tensor:
        self.calls += 1
        return self.denoiser(x, sigma, **kw)


def conditioning(model: Model, seeds: Sequence[int]) -> dict[str, Any]:
    """Per-seed class labels for class-conditional models (as ``erkguid generate`` draws them), else nothing."""
    if not model.num_classes:
        return {}
    from .generate import class_for_seed

    return {"class_labels": torch.tensor([class_for_seed(q, model.num_classes) for q in seeds])}


class Evaluator:
    """Fixed seeds, their noise at sigma_max, their reference solutions, and the per-sample error of a candidate.

    With ``reference`` (samples of the data distribution the user trusts, ``[N, *shape]``) the score is instead the
    sliced W2 distance of the candidate's samples to them (:func:`erkguid.metrics.sliced_wasserstein`).
    """

    def __init__(self, model: Model, seeds: Sequence[int], *, rtol: float = 1e-6, dtype: torch.dtype = torch.float64,
                 reference: Tensor | None = None) -> None:
        self.model, self.seeds, self.reference = model, list(seeds), reference
        self.extra = conditioning(model, self.seeds)
        self.x0 = randn_from_seeds(self.seeds, model.shape, sigma=model.sigma_max, dtype=dtype)
        with torch.no_grad():
            self.ref = reference_solve(model.denoiser, self.x0, model.sigma_max, rtol=rtol, atol=rtol / 10, **self.extra).x

    def head(self, k: int) -> Evaluator:
        """The same evaluator restricted to its first ``k`` seeds (no new reference solves)."""
        sub = object.__new__(Evaluator)
        sub.model, sub.seeds, sub.x0, sub.ref = self.model, self.seeds[:k], self.x0[:k], self.ref[:k]
        sub.reference = self.reference
        sub.extra = {n: v[:k] for n, v in self.extra.items()}
        return sub

    def run(self, cand: Candidate) -> Evaluated:
        """The candidate run from this evaluator's noise (:func:`erkguid.evaluation.evaluate`): samples, per-sample global
        errors against the reference solutions, and the NFE the engine counted."""
        with torch.no_grad():
            return evaluate(self.model.denoiser, self.x0, torch.tensor(cand.sigmas, dtype=torch.float64), self.ref,
                            solver=cand.solver, setting=Setting(cand.w_stiff, cand.w_con, cand.scaling, cand.trust),
                            solver_options=dict(cand.solver_options), extra_args=self.extra)

    def samples(self, cand: Candidate) -> tuple[Tensor, int]:
        """The candidate's samples and the NFE the run spent."""
        r = self.run(cand)
        return r.x, int(r.nfe)

    def errors(self, cand: Candidate) -> tuple[Tensor, int]:
        """Per-sample global errors ``[B]`` and the NFE the run spent."""
        r = self.run(cand)
        return r.err, int(r.nfe)

    def score(self, cand: Candidate) -> float:
        """Mean global error (or, with ``reference``, sliced W2 to it); ``inf`` when the configuration fails (a grid a
        solver rejects, a non-finite state)."""
        try:
            if self.reference is None:
                return float(self.errors(cand)[0].mean())
            x = self.samples(cand)[0]
            return sliced_wasserstein(x.reshape(x.shape[0], -1), self.reference.reshape(self.reference.shape[0], -1))
        except (ValueError, NonFiniteError, RuntimeError, ZeroDivisionError):
            return math.inf


def _levels(sigmas: Sequence[float]) -> list[float]:
    return [float(s) for s in sigmas[:-1]]


def _to_params(sigmas: Sequence[float]) -> list[float]:
    """Positive levels -> log of the log-sigma decrements (an unconstrained parametrisation of a decreasing grid)."""
    logs = [math.log(s) for s in _levels(sigmas)]
    return [math.log(a - b) for a, b in zip(logs[:-1], logs[1:])]


def _from_params(sigma_max: float, params: Sequence[float]) -> list[float]:
    logs = [math.log(sigma_max)]
    for v in params:
        logs.append(logs[-1] - math.exp(v))
    return [sigma_max] + [math.exp(v) for v in logs[1:]] + [0.0]  # sigma_max exactly: the noise is drawn at it


def fit_grid(score: Callable[[list[float]], float], sigmas: Sequence[float], *, deadline: float, max_evals: int = 400,
             step: float = 0.5, min_step: float = 0.03, progress: bool = False,
             desc: str = "fit grid") -> tuple[list[float], float]:
    """Coordinate descent on the log-sigma decrements of ``sigmas`` (sigma_max fixed, the last level free) minimising
    ``score(grid)``, with a step per coordinate that grows by 1.5 on success and halves on failure (a pattern search);
    stops at ``deadline`` (``time.monotonic()``), after ``max_evals`` or when every step is below ``min_step``.
    Returns the best grid and its score."""
    sigma_max = float(sigmas[0])
    params = _to_params(sigmas)
    steps, dirs = [step] * len(params), [1.0] * len(params)
    best = score(list(sigmas))
    evals = 1
    bar = tqdm(total=max_evals, disable=not progress, desc=desc, leave=False)

    def budget_left() -> bool:
        return evals < max_evals and time.monotonic() < deadline

    while budget_left() and any(h >= min_step for h in steps):
        for k in range(len(params)):
            if steps[k] < min_step:
                continue
            for sgn in (dirs[k], -dirs[k]):
                if not budget_left():
                    break
                trial = list(params)
                trial[k] += sgn * steps[k]
                val = score(_from_params(sigma_max, trial))
                evals += 1
                bar.update(1)
                if val < best:
                    best, params, dirs[k] = val, trial, sgn
                    steps[k] *= 1.5
                    bar.set_postfix(err=f"{best:.4g}")
                    break
            else:
                steps[k] /= 2
    bar.close()
    return _from_params(sigma_max, params), best


@dataclass
class TuneConfig:
    nfe: int
    calib: int = 128
    heldout: int = 256
    budget_minutes: float = 5.0
    rtol: float = 1e-6
    erk_top: int = 2
    fit_top: int = 2
    fit_evals: int = 300
    screen: int = 32  # calibration seeds used to screen solvers x grid families
    distill_iters: int = 0
    curve_nfes: tuple[int, ...] = ()
    solvers: tuple[str, ...] | None = None  # None: every registered solver
    reference: Tensor | None = None  # data samples: the objective becomes sliced W2 to them (else the global error)


def _plain_candidates(model: Model, nfe: int, solvers: Sequence[str] | None, notes: list[str],
                      grids: Sequence[str] = tuple(FAMILIES)) -> list[Candidate]:
    out = []
    for name in solvers or list(SOLVERS):
        spec = get_solver(name)
        if name == "adasde":
            notes.append("adasde: needs coefficients distilled for the model and grid (tune --distill)")
            continue
        opts = plain_options(spec)
        n = steps_for_nfe(spec, nfe, opts)
        if n is None:
            got = sorted({v for k in range(1, nfe + 2) if (v := _safe_nfe(spec, k, opts)) is not None})
            notes.append(f"{name}: no step count spends exactly {nfe} NFE (its NFE values: {got[:8]}); skipped")
            continue
        for g in grids:
            try:
                sig = check_sigmas(FAMILIES[g](n, model.sigma_min, model.sigma_max))
            except ValueError:
                continue
            sig[0] = model.sigma_max  # exactly the level the noise is drawn at (log-SNR's exp(log(.)) may miss by an ulp)
            out.append(Candidate(name, opts, sig.tolist(), grid=g))
    return out


def _distill(model: Model, nfe: int, iters: int, progress: bool) -> Candidate | None:
    """Deterministic AdaSDE (gamma = 0) coefficients distilled for the model at ``nfe`` (odd: analytic first step)
    on the distillation's own time-uniform grid over the model's sigma range."""
    from .training.adasde import DistillConfig, distill_adasde

    if nfe % 2 == 0 or nfe < 3:
        return None
    cfg = DistillConfig(nfe=nfe, gamma_max=0.0, iters=iters, batch=64, sigma_min=model.sigma_min, sigma_max=model.sigma_max)
    res = distill_adasde(model.denoiser, cfg, shape=tuple(model.shape), progress=progress)
    coef = res.coefficients
    return Candidate("adasde", {"coefficients": coef}, coef.grid().tolist(), grid="adasde-distilled (time-uniform)")


def _search(m: Model, nfe: int, cal: Evaluator, cfg: TuneConfig, deadline: float, notes: list[str],
            progress: bool) -> tuple[list[tuple[float, Candidate]], float, Candidate]:
    """The calibration search (stages 1-4 of the module docstring): ``(all scored, best score, winner)``."""
    scored: list[tuple[float, Candidate]] = []

    def run(cands: Sequence[Candidate], desc: str) -> list[tuple[float, Candidate]]:
        res = [(cal.score(c), c) for c in tqdm(cands, disable=not progress, desc=desc, leave=False)]
        scored.extend(res)
        return sorted(res, key=lambda t: t[0])

    # stage 1: screen solvers x grid families on a few calibration seeds, re-score the best on all of them
    screen = cal.head(cfg.screen)
    plain = _plain_candidates(m, nfe, cfg.solvers, notes)
    bar = tqdm(plain, disable=not progress, leave=False, desc=f"tune {m.name} NFE {nfe}: solvers x grids")
    ranked = sorted(((screen.score(c), c) for c in bar), key=lambda t: t[0])
    stage1 = run([c for _, c in ranked[: 4 * max(1, cfg.fit_top, cfg.erk_top)]], "re-score the best")
    if not stage1 or not math.isfinite(stage1[0][0]):
        raise ValueError(f"no registered solver spends exactly {nfe} NFE on model {m.name!r}: " + "; ".join(notes))
    # stage 2: fit the grid of the best plain configurations (one per solver); most of the budget goes here
    tops: list[Candidate] = []
    for val, c in stage1:
        if len(tops) < cfg.fit_top and math.isfinite(val) and c.solver not in {t.solver for t in tops}:
            tops.append(c)
    fitted: list[Candidate] = []
    for k, c in enumerate(tops):
        now = time.monotonic()
        if now >= deadline:
            notes.append(f"grid fit for {c.solver} skipped: the time budget was spent")
            continue
        until = now + (deadline - now) * 0.8 / (len(tops) - k)
        def score_grid(sigmas: list[float], c: Candidate = c) -> float:
            return cal.score(replace(c, sigmas=sigmas))

        grid, _ = fit_grid(score_grid, c.sigmas, deadline=until, max_evals=cfg.fit_evals, progress=progress,
                           desc=f"fit grid for {c.solver}")
        fitted.append(replace(c, sigmas=grid, grid=f"fitted from {c.grid}"))
    stage2 = run(fitted, "fitted grids")
    # stage 3: ERK-Guid on the best configurations so far (strength interacts with step sizes): the recommended setting
    # at this NFE, the strength/gate/scaling grid, then trust bounds on the best of them
    for _, c in sorted(stage2 + stage1[: cfg.erk_top], key=lambda t: t[0])[: cfg.erk_top]:
        if time.monotonic() >= deadline:
            notes.append(f"ERK-Guid search on {c.label} skipped: the time budget was spent")
            continue
        rec = recommended(c.solver, nfe)
        erk = [replace(c, **rec)] if rec["w_stiff"] > 0 else []
        erk += [replace(c, w_stiff=w, w_con=wc, scaling=s) for w, wc, s in ERK_GRID]
        best_val, best = run(erk, f"ERK-Guid on {c.label}")[0]
        if math.isfinite(best_val) and time.monotonic() < deadline:
            run([replace(best, trust=t) for t in TRUST_GRID if t != best.trust], f"ERK-Guid trust on {c.label}")
    # stage 4 (optional): AdaSDE coefficients distilled for the model
    if cfg.distill_iters > 0:
        cand = _distill(m, nfe, cfg.distill_iters, progress)
        if cand is None:
            notes.append(f"distill: AdaSDE with its analytic first step spends an odd NFE >= 3, not {nfe}; skipped")
        else:
            run([cand], "distilled AdaSDE")
    best_score, win = min(scored, key=lambda t: t[0])
    return scored, best_score, win


def _peer_errors(m: Model, held: Evaluator, nfe: int, solvers: Sequence[str] | None) -> list[dict[str, Any]]:
    """Held-out errors of every plain solver on the standard grids at ``nfe`` (``_err``: per sample)."""
    peers = []
    for c in _plain_candidates(m, nfe, solvers, [], grids=STANDARD_GRIDS):
        try:
            e, used = held.errors(c)
        except (ValueError, NonFiniteError, RuntimeError):
            continue
        peers.append({"label": c.label, "solver": c.solver, "grid": c.grid, "nfe": used, "err_mean": float(e.mean()), "_err": e})
    return peers


@sweep
def tune(model: str | Model, nfe: int, config: TuneConfig | None = None, *, allow_pickle: bool = False,
         progress: bool = True, evaluators: dict[Any, Evaluator] | None = None) -> dict[str, Any]:
    """Search samplers for ``model`` at exactly ``nfe`` evaluations; return the preset dict (see module docstring).

    ``evaluators``: a dict the caller keeps to reuse the calibration/held-out noise and reference solves across calls
    on the same model (e.g. several NFEs)."""
    if int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    cfg = replace(config, nfe=nfe) if config is not None else TuneConfig(nfe=nfe)
    m = model if isinstance(model, Model) else resolve_model(model, allow_pickle=allow_pickle)
    t0 = time.monotonic()
    cal_seeds = range(CALIB_SEED, CALIB_SEED + cfg.calib)
    held_seeds = range(HELDOUT_SEED, HELDOUT_SEED + cfg.heldout)
    if set(cal_seeds) & set(held_seeds):
        raise ValueError("calibration and held-out seeds overlap; use at most 1e6 calibration samples")
    cache = {} if evaluators is None else evaluators

    def evaluator(seeds: range) -> Evaluator:
        key = (m.name, seeds.start, seeds.stop, cfg.rtol, None if cfg.reference is None else id(cfg.reference))
        if key not in cache:
            cache[key] = Evaluator(m, seeds, rtol=cfg.rtol, reference=cfg.reference)
        return cache[key]

    notes: list[str] = []
    scored, best_score, win = _search(m, nfe, evaluator(cal_seeds), cfg, t0 + 60.0 * cfg.budget_minutes, notes, progress)
    search_s = time.monotonic() - t0
    # held-out: the winner against every plain peer on the standard grids, same seeds
    held = evaluator(held_seeds)
    err_win, nfe_win = held.errors(win)
    if nfe_win != nfe:
        raise RuntimeError(f"the winner {win.label} spent {nfe_win} NFE, not the budget {nfe} (solver nfe formula wrong?)")
    peers = _peer_errors(m, held, nfe, cfg.solvers)
    if not peers:
        raise ValueError(f"no plain peer runs at NFE {nfe} on the standard grids for model {m.name!r}")
    best_peer = min(peers, key=lambda p: p["err_mean"])
    ratio, lo, hi = ratio_ci(err_win, best_peer["_err"])
    for p in peers:
        p["ratio_tuned_over_peer"] = float(err_win.mean()) / p["err_mean"] if p["err_mean"] > 0 else math.nan
    distribution = None if cfg.reference is None else _heldout_distribution(held, win, m, nfe, cfg)
    objective = ("sliced W2 to the user's reference data" if cfg.reference is not None else
                 f"mean global error vs the model's reference solve (rtol {cfg.rtol:g})")
    return {
        "format": PRESET_FORMAT,
        "model": m.name,
        "nfe": int(nfe),
        "solver": win.solver,
        "solver_options": _jsonable_options(win.solver_options),
        "sigmas": [float(s) for s in win.sigmas],
        "w_stiff": win.w_stiff,
        "w_con": win.w_con,
        "scaling": win.scaling,
        **({"trust": win.trust} if win.trust is not None else {}),
        "chosen": {
            "how": f"min {objective} on calibration seeds over solvers x grid families, fitted grids, ERK-Guid settings "
                   "(erkguid.recommended and a strength/gate/scaling/trust grid)"
                   + (", distilled AdaSDE" if cfg.distill_iters else ""),
            "grid": win.grid, "label": win.label, "objective": objective, "calibration_err_mean": best_score,
            "calibration_seeds": [cal_seeds.start, cal_seeds.stop], "candidates_scored": len(scored),
            "search_seconds": search_s, "budget_minutes": cfg.budget_minutes, "notes": notes,
        },
        "heldout": {
            "seeds": [held_seeds.start, held_seeds.stop], "err_mean": float(err_win.mean()), "nfe_counted": nfe_win,
            "best_peer": best_peer["label"], "best_peer_err_mean": best_peer["err_mean"],
            "ratio_vs_best_peer": ratio, "ratio_ci95": [lo, hi], "interval": "paired bootstrap of the ratio of mean errors",
            "peers": [{k: v for k, v in p.items() if k != "_err"} for p in sorted(peers, key=lambda p: p["err_mean"])],
            "reference_rtol": cfg.rtol, "reference_atol": cfg.rtol / 10,
            "conditioning": "class labels from each seed" if m.num_classes else "none",
            **({"distribution": distribution} if distribution is not None else {}),
        },
        "curve": error_curve(m, held, cfg.curve_nfes, cfg.solvers),
        "wall_seconds": time.monotonic() - t0,
    }


def _heldout_distribution(held: Evaluator, win: Candidate, m: Model, nfe: int, cfg: TuneConfig,
                          boots: int = 200) -> dict[str, Any]:
    """Held-out sliced W2 to the reference data: the winner against the best plain peer by that metric, with a
    paired bootstrap interval of the ratio (both sample sets resampled with the same seed indices)."""
    assert cfg.reference is not None
    ref = cfg.reference.reshape(cfg.reference.shape[0], -1)
    xw = held.samples(win)[0].reshape(len(held.seeds), -1)
    best: tuple[float, str, Tensor] | None = None
    for c in _plain_candidates(m, nfe, cfg.solvers, [], grids=STANDARD_GRIDS):
        try:
            xp = held.samples(c)[0].reshape(len(held.seeds), -1)
        except (ValueError, NonFiniteError, RuntimeError):
            continue
        v = sliced_wasserstein(xp, ref)
        if best is None or v < best[0]:
            best = (v, c.label, xp)
    if best is None:
        raise ValueError(f"no plain peer runs at NFE {nfe} on the standard grids for model {m.name!r}")
    sw_win = sliced_wasserstein(xw, ref)
    g = torch.Generator().manual_seed(0)
    ratios = []
    for _ in range(boots):
        idx = torch.randint(0, xw.shape[0], (xw.shape[0],), generator=g)
        den = sliced_wasserstein(best[2][idx], ref)
        ratios.append(sliced_wasserstein(xw[idx], ref) / den if den > 0 else math.inf)
    ratios.sort()
    lo, hi = ratios[int(0.025 * boots)], ratios[min(boots - 1, int(0.975 * boots))]
    return {"metric": "sliced W2 to the reference data", "reference_samples": int(cfg.reference.shape[0]),
            "winner": sw_win, "best_peer": best[1], "best_peer_value": best[0],
            "ratio_vs_best_peer": sw_win / best[0] if best[0] > 0 else math.inf, "ratio_ci95": [lo, hi],
            "interval": "paired bootstrap over held-out seeds (same indices for both sample sets)"}


MAX_REFERENCE_BYTES = 1 << 30  # declared array bytes of a --reference-data file


def load_reference_data(path: str | Path, shape: Sequence[int]) -> Tensor:
    """Data samples ``[N, *shape]`` (float64) from an ``.npz`` (array ``x``, or its only array); sizes are checked in the
    file's headers before anything is read, and the file is never unpickled."""
    import numpy as np

    from .resolve import npz_headers

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"reference data file not found: {p}")
    heads = npz_headers(p, MAX_REFERENCE_BYTES)
    name = "x" if "x" in heads else (next(iter(heads)) if len(heads) == 1 else None)
    if name is None:
        raise ValueError(f"reference data {p}: needs an array named 'x' (found {sorted(heads)})")
    with np.load(p, allow_pickle=False) as z:
        x = torch.as_tensor(z[name], dtype=torch.float64)
    d = math.prod(shape)
    if x.ndim < 2 or x.shape[0] < 2 or math.prod(x.shape[1:]) != d:
        raise ValueError(f"reference data {p}: array {name!r} has shape {tuple(x.shape)}; need [N >= 2, *{tuple(shape)}]")
    if not torch.isfinite(x).all():
        raise ValueError(f"reference data {p}: array {name!r} holds NaN/Inf")
    return x.reshape(x.shape[0], *shape)


def error_curve(model: Model, held: Evaluator, nfes: Sequence[int], solvers: Sequence[str] | None) -> list[dict[str, Any]]:
    """Held-out mean error of every plain peer on the standard grids at each NFE (the table/plot beside the winner)."""
    return [{"nfe": p["nfe"], "label": p["label"], "err_mean": p["err_mean"]} for n in nfes
            for p in _peer_errors(model, held, n, solvers)]


def _jsonable_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Solver options as JSON; AdaSDE coefficients are stored inline (never a pickle)."""
    from .solvers.adasde_coeffs import AdaSDECoefficients

    out = {k: {"adasde_coefficients": v.to_dict()} if isinstance(v, AdaSDECoefficients) else v for k, v in opts.items()}
    json.dumps(out)
    return out


# ------------------------------------------------------------------------------------------- presets
def save_preset(preset: dict[str, Any], path: str | Path) -> Path:
    """Write a preset atomically (temp file, fsync, rename)."""
    from .generate import atomic_write

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, (json.dumps(preset, indent=2) + "\n").encode())
    return p


SAMPLE_KEYS = ("sigmas", "solver", "solver_options", "w_stiff", "w_con", "scaling")


MAX_PRESET_BYTES = 2**20
PRESET_TYPES: dict[str, Any] = {"model": str, "solver": str, "steps": int, "w_stiff": float, "w_con": float, "scaling": str,
                                "nfe": int}


def _check_types(d: dict[str, Any], p: Path) -> None:
    """Each known key has its type: strings, integers (not bools, not 6.7), finite non-negative numbers."""
    for k, kind in PRESET_TYPES.items():
        if k not in d:
            continue
        v = d[k]
        if kind is str:
            ok = isinstance(v, str)
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok:
            want = {str: "a string", int: "an integer"}.get(kind, "a finite number")
            raise ValueError(f"preset {p}: {k!r} must be {want}, got {v!r}")
        if kind is not str and v < (1 if kind is int else 0):
            raise ValueError(f"preset {p}: {k!r} must be >= {1 if kind is int else 0}, got {v!r}")


def read_preset(path: str | Path) -> dict[str, Any]:
    """The preset dict, validated (size, keys and their types, grid, solver, NFE consistency). Reading a preset never
    unpickles anything: an ``edm:`` model in it still needs ``allow_pickle`` from the person running the command."""
    from ._io import read_json_object

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"preset file not found: {p}")
    d = read_json_object(p, what="preset", max_bytes=MAX_PRESET_BYTES)
    _check_types(d, p)
    if "format" not in d:
        d = _from_legacy(d, p)
    if d.get("format") != PRESET_FORMAT:
        raise ValueError(f"preset {p} is not an {PRESET_FORMAT} file (rerun erkguid tune --model SPEC --nfe N)")
    missing = [k for k in ("model", "nfe", *SAMPLE_KEYS) if k not in d]
    if missing:
        raise ValueError(f"preset {p} lacks keys {missing}")
    _check_types(d, p)
    check_sigmas(d["sigmas"], name=f"preset {p} sigmas")
    trust = d.get("trust")
    if trust is not None and (isinstance(trust, bool) or not isinstance(trust, (int, float)) or not 0 < trust < math.inf):
        raise ValueError(f"preset {p}: trust must be null or a finite number > 0, got {trust!r}")
    spec = get_solver(d["solver"])
    opts = options_from_json(d["solver_options"])
    n = solver_nfe(spec, len(d["sigmas"]) - 1, opts)
    if n != d["nfe"]:
        raise ValueError(f"preset {p}: solver {d['solver']} on its {len(d['sigmas']) - 1}-step grid spends {n} NFE, "
                         f"not the recorded {d['nfe']}")
    return d


def _from_legacy(d: dict[str, Any], p: Path) -> dict[str, Any]:
    """A preset of the former ``erkguid tune TARGET --solver S`` (solver, steps, strengths; the EDM rho=7 grid over
    [0.002, 80] it was tuned on) in the current format."""
    from .experiments.paper import TARGET_MODELS

    model = d.get("model") or TARGET_MODELS.get(d.get("target", ""))
    if model is None or not {"solver", "steps", "w_stiff", "w_con"} <= set(d):
        raise ValueError(f"preset {p} lacks keys {sorted({'model', 'solver', 'steps', 'w_stiff', 'w_con'} - set(d))} "
                         "(rerun erkguid tune --model SPEC --nfe N)")
    sigmas = edm_sigmas(int(d["steps"])).tolist()
    nfe = solver_nfe(get_solver(d["solver"]), len(sigmas) - 1, {})
    return {**d, "format": PRESET_FORMAT, "model": model, "nfe": nfe, "solver_options": {}, "sigmas": sigmas,
            "scaling": d.get("scaling", "z2"), "legacy": "converted from a preset of the former erkguid tune TARGET"}


def options_from_json(opts: dict[str, Any]) -> dict[str, Any]:
    """Solver options as stored in a preset -> as :func:`erkguid.sample` takes them (inline AdaSDE coefficients)."""
    from .solvers.adasde_coeffs import AdaSDECoefficients

    if not isinstance(opts, dict):
        raise ValueError(f"solver_options must be a JSON object, got {type(opts).__name__}")
    return {k: AdaSDECoefficients.from_dict(v["adasde_coefficients"]) if isinstance(v, dict) and "adasde_coefficients" in v
            else v for k, v in opts.items()}


def load_preset(path: str | Path, *, nfe: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`erkguid.sample` (``sigmas``, ``solver``, ``solver_options``, ``w_stiff``, ``w_con``,
    ``scaling``, and ``trust`` when the preset sets one) from a preset written by ``erkguid tune``.
    ``nfe``: the budget the caller means to spend; a preset tuned for another NFE is refused (its grid and settings
    were chosen for its own budget)."""
    d = read_preset(path)
    if nfe is not None and int(nfe) != d["nfe"]:
        raise ValueError(f"preset {path} was tuned for NFE {d['nfe']}, not {nfe}; run erkguid tune --nfe {nfe}")
    kw = {k: d[k] for k in SAMPLE_KEYS}
    if d.get("trust") is not None:
        kw["trust"] = float(d["trust"])
    kw["solver_options"] = options_from_json(d["solver_options"])
    kw["sigmas"] = torch.tensor(d["sigmas"], dtype=torch.float64)
    return kw


# ------------------------------------------------------------------------------------------- report
def format_table(res: dict[str, Any]) -> str:
    h = res["heldout"]
    lo, hi = h["ratio_ci95"]
    lines = [f"| sampler (NFE {res['nfe']}) | held-out mean error | tuned / this |", "|---|---|---|",
             f"| **tuned: {res['chosen']['label']}** | {h['err_mean']:.4g} | 1 |"]
    lines += [f"| {p['label']} | {p['err_mean']:.4g} | {p['ratio_tuned_over_peer']:.3f} |" for p in h["peers"]]
    lines.append(f"\nheld-out ratio vs best plain peer ({h['best_peer']}): {h['ratio_vs_best_peer']:.3f} "
                 f"[{lo:.3f}, {hi:.3f}] (95% paired bootstrap); seeds {h['seeds'][0]}..{h['seeds'][1] - 1}")
    return "\n".join(lines)


def plot_curve(res: dict[str, Any], path: Path) -> None:
    from .experiments._output import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    by: dict[str, list[tuple[int, float]]] = {}
    for r in res["curve"] or [{"nfe": res["nfe"], **p} for p in res["heldout"]["peers"]]:
        by.setdefault(r["label"], []).append((r["nfe"], r["err_mean"]))
    for label, pts in sorted(by.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=0.8, alpha=0.6, label=label)
    tuned = res.get("tuned_curve") or [(res["nfe"], res["heldout"]["err_mean"])]
    ax.plot([t[0] for t in tuned], [t[1] for t in tuned], "k*-", ms=10, label="tuned (erkguid tune)")
    ax.set(xlabel="NFE", ylabel="held-out mean global error", yscale="log", title=res["model"])
    ax.legend(fontsize=5, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["Candidate", "CountingDenoiser", "Evaluator", "TuneConfig", "fit_grid", "format_table", "load_preset",
           "read_preset", "save_preset", "solver_nfe", "steps_for_nfe", "tune"]
