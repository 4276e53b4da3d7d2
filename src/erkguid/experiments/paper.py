"""Paper-table analogues (Tables 2, 3, 4, 10, 11 and Fig. 4) on shipped learned models and exact mixtures.

Every row samples the same per-sample-seeded noise (common random numbers) and reports, side by
side, the *accuracy* (global error vs. a reference DP5 solve of the same, possibly guided, ODE)
and *distribution metrics* (FD, KID, precision, recall, IS analogue) against reference data,
with paired bootstrap intervals over seeds against the row's baseline (w_stiff = 0).
These are small 2-D / 64-D models, not the paper's ImageNet networks: compare trends, not numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._io import atomic_savefig
from .._validate import sweep
from ..evaluation import Row, Setting, evaluate, write_results
from ..feature_metrics import DigitsFeatures, FeatureReference, inception_score, kid
from ..guidance import autoguidance, cfg
from ..metrics import global_error, paired_bootstrap, ratio_ci
from ..noise import randn_from_seeds
from ..reference import reference_solve
from ..schedules import edm_sigmas
from ..solvers import SOLVERS
from ._output import pyplot
from .bench import max_steps

SIGMA_MAX = 80.0
# Paper Table 5 (ImageNet-64 column) strengths for Table 4, with w_con = 0.05 (App. B.2).
TABLE4_W: dict[str, float | dict[int, float]] = {"heun": {6: 0.75, 8: 1.25, 10: 1.0}, "dpm2": 1.25, "deis": 2.5}
# The official scripts/reproduce.sh of mlvlab/ERK-Guid: Table 2 (w_stiff, w_con) per step count (32 steps: w_stiff 0.5-2.5
# at w_con 0.5, our own sweep), Table 3 guidance scales (EDM2 presets edm2-img512-s-guid-fid 1.4 / s-autog-fid 2.1 at
# 32 steps, 1.2 / 1.55 at 16 steps) with w_stiff 0.75 (16) / 1.0 (32) and w_con 0.5.
PAPER_NFE = "paper NFE"  # variant label of rows on grids ending at sigma_min
OFFICIAL_TABLE2: dict[int, tuple[float, float]] = {8: (0.5, 0.1), 16: (0.75, 0.3)}
OFFICIAL_TABLE3_SCALES: dict[int, dict[str, float]] = {16: {"cfg": 1.2, "ag": 1.55}, 32: {"cfg": 1.4, "ag": 2.1}}
TARGETS = ("tree2d-learned", "digits-learned", "tree2d-exact", "digits-exact", "patches16")
# The conditional model of each target as an `erkguid generate` / `erkguid sample` model spec (patches16: the
# unconditional spec; its classes are erkguid.models.builtin.texture_classes, see make_target).
TARGET_MODELS = {"tree2d-learned": "learned:tree2d-main", "digits-learned": "learned:digits-main", "tree2d-exact": "tree2d",
                 "digits-exact": "digits64", "patches16": "patches16"}
DEFAULT_TARGETS = TARGETS[:4]  # patches16 (256-D, costlier references) runs when named: --targets patches16


# --------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """A model under test: conditional denoiser, optional weak model, reference data, feature space."""

    name: str
    denoiser: Callable[..., Tensor]
    weak: Callable[..., Tensor] | None
    shape: tuple[int, ...]
    num_classes: int
    space: str  # "raw" or "digits"
    data: Tensor  # reference data for distribution metrics
    _feat: Any = field(default=None, repr=False)

    def features(self, x: Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        if self.space == "raw":
            return x.reshape(x.shape[0], -1).double().numpy(), None
        if self._feat is None:
            self._feat = DigitsFeatures()
        return self._feat(x)

    def guided(self, guidance: str, w: float) -> Callable[..., Tensor]:
        """``none``, ``cfg`` (guiding = unconditional, :func:`erkguid.guidance.cfg`) or ``ag`` (guiding =
        weak model, :func:`erkguid.guidance.autoguidance`): D_guide + w (D_main - D_guide) (Eq. 55)."""
        if guidance == "none":
            return self.denoiser
        if guidance == "cfg":
            return cfg(self.denoiser, w, {"class_labels": None})
        if guidance == "ag":
            if self.weak is None:
                raise ValueError(f"target {self.name!r} has no weak model for autoguidance")
            return autoguidance(self.denoiser, self.weak, w)
        raise ValueError(f"guidance must be 'none', 'cfg' or 'ag', got {guidance!r}")


def make_target(name: str, num_ref: int = 2048) -> Target:
    """Build one of :data:`TARGETS` from its model spec (:func:`erkguid.resolve.resolve_model`)."""
    from ..models import digits_data
    from ..resolve import resolve_model

    if name not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {name!r}")
    if name == "patches16":  # 4 texture classes (equal prior mass, flat -> textured); weak model: covariances x 1.5
        from ..models.builtin import patch_classes

        g = patch_classes("patches16")
        data = g.sample(num_ref, seed=777, class_labels=torch.arange(num_ref) % g.num_classes)  # the Evaluator's labels
        return Target(name, g.denoise, g.broadened(1.5).denoise, tuple(g.shape), g.num_classes, "raw", data)
    m = resolve_model(TARGET_MODELS[name])
    tree = name.startswith("tree2d")
    if name.endswith("-learned"):
        weak = resolve_model(TARGET_MODELS[name].replace("-main", "-weak")).denoiser
    else:
        weak = m.truth.broadened(4.0 if tree else 1.5).denoise
    data = m.truth.sample(num_ref, seed=777) if tree else digits_data()[0]
    return Target(name, m.denoiser, weak, tuple(m.shape), int(m.num_classes or 0), "raw" if tree else "digits", data)


# ------------------------------------------------------------------------------ evaluation
@dataclass
class Run:
    """Samples of one configuration and their per-sample quantities."""

    x: Tensor
    err: Tensor
    feats: np.ndarray
    probs: np.ndarray | None
    nfe: float
    gated: float


class Evaluator:
    """Runs configurations of one target on a fixed noise batch, caching references and baselines."""

    def __init__(self, target: Target, num_samples: int, seed: int = 0, rtol: float = 1e-6, num_boot: int = 200) -> None:
        self.t = target
        self.seeds = list(range(seed, seed + num_samples))
        self.x0 = randn_from_seeds(self.seeds, target.shape, sigma=SIGMA_MAX, dtype=torch.float64)
        self.labels = torch.tensor(self.seeds) % target.num_classes if target.num_classes else None
        self.rtol = rtol
        self.num_boot = num_boot
        self.ref_feats, _ = target.features(target.data)
        self.ref = FeatureReference(self.ref_feats, k=3)
        self._refs: dict[tuple[str, float, float], Tensor] = {}
        self._runs: dict[tuple, Run] = {}
        self.reference_nfe: dict[str, float] = {}

    def _extra(self) -> dict[str, Any]:
        return {} if self.labels is None else {"class_labels": self.labels}

    def reference(self, guidance: str, w: float, sigma_end: float = 0.0) -> Tensor:
        """The exact ODE solution at ``sigma_end`` (0: the data end) from the batch's noise."""
        key = (guidance, w, sigma_end)
        if key not in self._refs:
            res = reference_solve(self.t.guided(guidance, w), self.x0, SIGMA_MAX, sigma_end=sigma_end, rtol=self.rtol,
                                  atol=self.rtol / 10, **self._extra())
            self._refs[key] = res.x
            self.reference_nfe[f"{guidance}:{w:g}" + (f":to{sigma_end:g}" if sigma_end else "")] = float(res.nfe.double().mean())
        return self._refs[key]

    def run(self, solver: str, steps: int, w_stiff: float, w_con: float, guidance: str = "none", w_guid: float = 1.0,
            options: tuple[tuple[str, Any], ...] = (), to_zero: bool = True) -> Run:
        """``steps`` steps on the EDM grid; ``to_zero=False``: the ``steps`` steps end at sigma_min (``steps + 1``
        levels, no final step to 0: diff-sampler's ``denoise_to_zero=False``, the paper's Table 4 NFE accounting);
        the error is then measured against the exact solution at sigma_min."""
        key = (solver, steps, w_stiff, w_con, guidance, w_guid, options, to_zero)
        if key not in self._runs:
            opts = dict(options)
            seeds = self.seeds if opts.get("stochastic") else None
            grid = edm_sigmas(steps, sigma_max=SIGMA_MAX) if to_zero else edm_sigmas(steps + 1, sigma_max=SIGMA_MAX)[:-1]
            sigma_end = 0.0 if to_zero else float(grid[-1])
            ev = evaluate(self.t.guided(guidance, w_guid), self.x0, grid, self.reference(guidance, w_guid, sigma_end),
                          solver=solver, setting=Setting(w_stiff, w_con), solver_options=opts or None, seeds=seeds,
                          check_divergence=False, **self._extra())  # a table row shows a blow-up as its error
            beta = ev.trace.beta[~ev.trace.beta.isnan()]
            gated = float((beta != 0).double().mean()) if beta.numel() and w_stiff > 0 else 0.0
            self._runs[key] = Run(ev.x, ev.err, *self.t.features(ev.x.float()), ev.trace.nfe, gated)
        return self._runs[key]

    def run_adaptive(self, steps: int, tau: float) -> Run:
        """The solvers issue's stiffness-driven adaptive Heun (App. B.6): per-sample step halving while rho > tau."""
        from ..solvers.adaptive import adaptive_heun

        key = ("adaptive_heun", steps, tau)
        if key not in self._runs:
            res = adaptive_heun(self.t.denoiser, self.x0, edm_sigmas(steps, sigma_max=SIGMA_MAX), tau=tau, **self._extra())
            self._runs[key] = Run(res.x, global_error(res.x, self.reference("none", 1.0)), *self.t.features(res.x.float()),
                                  round(float(res.nfe.double().mean()), 1), 0.0)
        return self._runs[key]

    def _fd_delta(self, a: Run, b: Run) -> tuple[float, float, float]:
        """FD(a) - FD(b) with a paired bootstrap over seeds (same resampled seeds for both)."""
        lo, hi = paired_bootstrap(lambda i: self.ref.fd(a.feats[i]) - self.ref.fd(b.feats[i]), len(a.feats), self.num_boot)
        return self.ref.fd(a.feats) - self.ref.fd(b.feats), lo, hi

    def row(self, table: str, solver: str, steps: int, w_stiff: float, w_con: float, guidance: str = "none",
            w_guid: float = 1.0, options: tuple[tuple[str, Any], ...] = (), tau: float | None = None,
            base_steps: int | None = None, to_zero: bool = True, variant: str = "") -> Row:
        """One table row; the baseline is ``solver`` at ``steps`` without ERK-Guid (for adaptive rows
        (``tau``) and solver-option rows: plain Heun at ``base_steps`` or ``steps``) on the same kind of grid
        (``to_zero``, see :meth:`run`). ``variant`` labels the row (e.g. ``official``)."""
        if tau is not None:
            r = self.run_adaptive(steps, tau)
            base = self.run("heun", base_steps or steps, 0.0, 0.0)
        else:
            r = self.run(solver, steps, w_stiff, w_con, guidance, w_guid, options, to_zero)
            base = self.run(solver if not options else "heun", base_steps or steps, 0.0, 0.0, guidance, w_guid, to_zero=to_zero)
        if r is not base:
            ratio, lo, hi = ratio_ci(r.err, base.err)
            fdd = self._fd_delta(r, base)
        else:
            ratio, lo, hi, fdd = 1.0, 1.0, 1.0, (0.0, 0.0, 0.0)
        prec, rec = self.ref.precision_recall(r.feats)
        k = kid(r.feats, self.ref_feats, num_subsets=10, subset_size=min(1000, len(r.feats)))[0]
        variant = variant or (f"tau={tau:g}" if tau is not None else ", ".join(f"{a}={b}" for a, b in options))
        metrics = {"err_mean": float(r.err.mean()), "fd": self.ref.fd(r.feats), "kid_x1e3": 1e3 * k, "precision": prec,
                   "recall": rec, "inception": None if r.probs is None else inception_score(r.probs)}
        extras = {"table": table, "guidance": guidance if guidance == "none" else f"{guidance} w={w_guid:g}", "variant": variant}
        return Row(self.t.name, "adaptive_heun" if tau is not None else solver, steps, r.nfe, Setting(w_stiff, w_con), metrics,
                   {"err_ratio": (ratio, lo, hi), "fd_delta": fdd}, r.gated, None, extras)


# ------------------------------------------------------------------------------ the suite
@dataclass
class SuiteConfig:
    targets: tuple[str, ...] = DEFAULT_TARGETS
    num_samples: int = 1024
    table2_steps: tuple[int, ...] = (8, 16, 32)
    table2_w: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
    table2_wcon: float = 0.5
    table3_steps: tuple[int, ...] = (16, 32)
    table3_w: dict[int, float] = field(default_factory=lambda: {16: 0.75, 32: 1.0})  # App. B.2
    cfg_scale: float = 1.5
    ag_scale: float = 2.0
    table4_nfe: tuple[int, ...] = (6, 8, 10)
    table4_wcon: float = 0.05
    official: bool = True  # add the official scripts' settings (Tables 2, 3) and the paper's NFE accounting (Table 4)
    fig4_steps: tuple[int, ...] = (16,)
    fig4_w: tuple[float, ...] = (0.5, 1.0, 2.0)
    fig4_wcon: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
    table10_steps: int = 16
    table10_tau: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
    table11_r: tuple[tuple[float, bool], ...] = ((0.05, True), (0.1, True), (0.15, True), (0.01, False), (0.02, False),
                                                 (0.03, False))
    tables: tuple[str, ...] = ("table2", "table3", "table4", "fig4", "table10", "table11")
    rtol: float = 1e-6
    num_boot: int = 200

    @classmethod
    def quick(cls) -> SuiteConfig:
        return cls(targets=("tree2d-learned", "digits-learned", "tree2d-exact"), num_samples=96, table2_steps=(8,),
                   table2_w=(0.0, 1.0), table3_steps=(16,), table4_nfe=(8,), fig4_w=(1.0,), fig4_wcon=(0.0, 0.5),
                   table10_steps=8, table10_tau=(1.0,), table11_r=((0.05, True), (0.02, False)), rtol=1e-4, num_boot=20)


def table4_w(solver: str, nfe: int) -> float:
    """w_stiff of paper Table 5 (ImageNet-64) for ``solver`` at ``nfe`` (1.0 where the paper has none)."""
    v = TABLE4_W.get(solver, 1.0)
    return float(v.get(nfe, 1.0)) if isinstance(v, dict) else float(v)


def paper_steps(solver: str, nfe: int) -> int | None:
    """The largest step count whose NFE on a grid ending at sigma_min (no final step to 0, the paper's Table 4
    accounting) fits the budget ``nfe``; None if not even one step fits."""
    spec = SOLVERS[solver]
    ok = [n for n in range(1, nfe + 1) if spec.nfe(n, None, to_zero=False) <= nfe]
    return max(ok) if ok else None


def official_jobs(cfg: SuiteConfig) -> list[tuple[tuple, dict[str, Any]]]:
    """The rows the official code would run on our targets: Table 2's (w_stiff, w_con) of scripts/reproduce.sh
    at 8 and 16 steps, Table 3 at the official presets' guidance scales, Table 4 on grids ending at sigma_min."""
    jobs: list[tuple[tuple, dict[str, Any]]] = []
    off = {"variant": "official"}
    if "table2" in cfg.tables:
        jobs += [(("table2:official", "heun", n, *OFFICIAL_TABLE2[n]), off) for n in cfg.table2_steps if n in OFFICIAL_TABLE2]
    if "table3" in cfg.tables:
        for n in (n for n in cfg.table3_steps if n in OFFICIAL_TABLE3_SCALES):
            for g, gw in OFFICIAL_TABLE3_SCALES[n].items():
                jobs += [(("table3:official", "heun", n, w, 0.5 if w > 0 else 0.0, g, gw), off)
                         for w in (0.0, cfg.table3_w.get(n, 1.0))]
    if "table4" in cfg.tables:
        for s in table4_solvers():
            for nfe in cfg.table4_nfe:
                n4 = paper_steps(s, nfe)
                if n4 is None or n4 < 2:
                    continue
                kw = {"to_zero": False, "variant": PAPER_NFE}
                tab = f"table4:paper-nfe{nfe}"
                jobs += [((tab, s, n4, 0.0, 0.0), kw), ((tab, s, n4, table4_w(s, nfe), cfg.table4_wcon), kw)]
    return jobs


def table4_solvers() -> list[str]:
    """Solvers of Table 4 that are registered (heun, dpm2, deis; others appear once they exist)."""
    return [s for s in ("heun", "dpm2", "deis") if s in SOLVERS]


def _has_adaptive() -> bool:
    try:
        from ..solvers.adaptive import adaptive_heun  # noqa: F401
    except ImportError:
        return False
    return True


def table11_solvers() -> list[str]:
    """Predictor-corrector baselines (Table 11) that are registered."""
    return sorted(s for s in SOLVERS if "pc" in s.split("_") or s.endswith("_pc"))


@sweep
def run_paper_suite(out_dir: str | Path | None = "runs/paper", *, quick: bool = False, config: SuiteConfig | None = None,
                    seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run every table on every target; write ``paper.json``, ``paper.md`` and ``paper.png``."""
    cfg = config or (SuiteConfig.quick() if quick else SuiteConfig())
    rows: list[Row] = []
    refs: dict[str, Any] = {}
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for tname in tqdm(cfg.targets, disable=not progress, desc="paper suite"):
            ev = Evaluator(make_target(tname), cfg.num_samples, seed=seed, rtol=cfg.rtol, num_boot=cfg.num_boot)
            jobs: list[tuple[tuple, dict[str, Any]]] = []
            if "table2" in cfg.tables:
                for n in cfg.table2_steps:
                    jobs += [(("table2", "heun", n, w, cfg.table2_wcon if w > 0 else 0.0), {}) for w in cfg.table2_w]
            if "table3" in cfg.tables:
                for n in cfg.table3_steps:
                    for g, gw in (("cfg", cfg.cfg_scale), ("ag", cfg.ag_scale)):
                        jobs += [(("table3", "heun", n, w, 0.5 if w > 0 else 0.0, g, gw), {})
                                 for w in (0.0, cfg.table3_w.get(n, 1.0))]
            if "table4" in cfg.tables:
                for s in table4_solvers():
                    for nfe in cfg.table4_nfe:
                        n4 = max_steps(s, nfe)
                        if n4 is None or n4 < 2:
                            continue
                        tab = f"table4:nfe{nfe}"
                        jobs += [((tab, s, n4, 0.0, 0.0), {}), ((tab, s, n4, table4_w(s, nfe), cfg.table4_wcon), {})]
            if "fig4" in cfg.tables:
                for n in cfg.fig4_steps:
                    jobs += [(("fig4", "heun", n, w, c), {}) for w in cfg.fig4_w for c in cfg.fig4_wcon]
            n10 = cfg.table10_steps
            if "table10" in cfg.tables and _has_adaptive():
                jobs += [(("table10", "heun", n10, 0.0, 0.0), {}), (("table10", "heun", n10, 1.0, 0.5), {})]
                jobs += [(("table10", "heun", n10, 0.0, 0.0), {"tau": t}) for t in cfg.table10_tau]
            if "table11" in cfg.tables:
                for s in table11_solvers():
                    n11 = max_steps(s, SOLVERS["heun"].nfe(n10))
                    if n11 is None or n11 < 2:
                        continue
                    jobs += [(("table11", s, n11, 0.0, 0.0), {"options": (("r", r), ("stochastic", st)), "base_steps": n10})
                             for r, st in cfg.table11_r]
            if cfg.official:
                jobs += official_jobs(cfg)
            for args, kw in tqdm(jobs, disable=not progress, desc=tname, leave=False):
                rows.append(ev.row(*args, **kw))
            refs[tname] = {"reference_mean_nfe": ev.reference_nfe, "rtol": cfg.rtol}
    finally:
        torch.set_num_threads(threads)
    result: dict[str, Any] = {"config": asdict(cfg), "seed": seed, "seconds": time.perf_counter() - t_start, "references": refs,
              "solvers_available": sorted(SOLVERS), "rows": [r.flat() for r in rows]}
    if out_dir is not None:
        result["files"] = write_results(out_dir, "paper", result, format_suite(result["rows"]),
                                        lambda p: plot_suite(p, result["rows"]))
    return result


def _is_base(r: dict[str, Any]) -> bool:
    """A row that is its own baseline: no ERK-Guid and no solver variant (a settings label is not a variant)."""
    return r["w_stiff"] == 0 and r.get("variant", "") in ("", "official", PAPER_NFE)


def _fmt_row(r: dict[str, Any]) -> str:
    base = _is_base(r)
    ratio = "—" if base else f"{r['err_ratio']:.3f} [{r['err_ratio_lo']:.3f}, {r['err_ratio_hi']:.3f}]"
    dfd = "—" if base else f"{r['fd_delta']:+.4g} [{r['fd_delta_lo']:+.3g}, {r['fd_delta_hi']:+.3g}]"
    is_ = "—" if r["inception"] is None else f"{r['inception']:.3f}"
    return (f"| {r['model']} | {r['solver']} | {r['steps']} | {r['nfe']} | {r['guidance']} | {r['w_stiff']:g} | "
            f"{r['w_con']:g} | "
            f"{r['err_mean']:.4g} | {ratio} | {r['fd']:.4g} | {dfd} | {r['kid_x1e3']:.3g} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {is_} | {r.get('variant', '')} |")


TITLES = {
    "table2": "Table 2 analogue: w_stiff sweep (Heun, w_con as in the paper)",
    "table3": "Table 3 analogue: ERK-Guid with CFG and autoguidance (Heun)",
    "table4": "Table 4 analogue: solvers +/- ERK-Guid at a fixed NFE budget",
    "fig4": "Fig. 4 analogue: grid over w_con for several w_stiff (Heun)",
    "table10": "Table 10 analogue: Heun, ERK-Guid (w_stiff 1, w_con 0.5) and stiffness-adaptive Heun (halving while rho > tau)",
    "table11": "Table 11 analogue: Heun + Langevin corrector (stochastic / deterministic, r) at about the Table 10 NFE",
}


def format_suite(rows: list[dict[str, Any]]) -> str:
    """Markdown: one table per paper table, accuracy and distribution metrics side by side."""
    head = ("| target | solver | steps | NFE | guidance | w_stiff | w_con | err mean | err / base [95% CI] | FD | "
            "dFD vs base [95% CI] | KIDx1e3 | precision | recall | IS | variant |")
    out = []
    for key, title in TITLES.items():
        sel = [r for r in rows if r["table"].split(":")[0] == key]
        if not sel:
            continue
        out += [f"## {title}", "", head, "|" + "---|" * 16] + [_fmt_row(r) for r in sel] + [""]
    return "\n".join(out)


def format_official(rows: list[dict[str, Any]]) -> str:
    """Markdown: the official scripts' settings (``official``, ``paper NFE`` rows) beside ours, ERK rows only, each with
    its baseline's FD: Table 2 at the official steps (ours: w_stiff 0.5 and 1 at w_con 0.5), Tables 3 and 4 in full."""
    def base(r: dict[str, Any]) -> dict[str, Any]:
        table = "table2" if r["table"] == "table2:official" else r["table"]  # the official Table 2 rows share our baseline
        return next(b for b in rows if b["table"] == table and b["model"] == r["model"] and b["solver"] == r["solver"]
                    and b["steps"] == r["steps"] and b["guidance"] == r["guidance"] and _is_base(b))

    off2 = {(r["model"], r["steps"]) for r in rows if r["table"] == "table2:official"}
    ours2 = [r for r in rows if r["table"] == "table2" and (r["model"], r["steps"]) in off2 and r["w_stiff"] in (0.5, 1.0)]
    keep = [r for r in rows if not _is_base(r) and (r["table"] == "table2:official" or r in ours2
                                                     or r["table"].split(":")[0] in ("table3", "table4"))]
    order = {"table2": 0, "table3": 1, "table4": 2}
    keep.sort(key=lambda r: (order[r["table"].split(":")[0]], r["model"], r["solver"], r["guidance"].split(" ")[0], r["nfe"],
                             r["table"], r["w_stiff"]))
    lines = ["| table | target | solver | steps | NFE | guidance | w_stiff | w_con | settings | err / base [95% CI] | "
             "FD base -> ERK | dFD [95% CI] |", "|" + "---|" * 12]
    for r in keep:
        b = base(r)
        who = "official" if r["variant"] == "official" else "paper NFE" if r["variant"] == PAPER_NFE else "ours"
        lines.append(f"| {r['table'].split(':')[0]} | {r['model']} | {r['solver']} | {r['steps']} | {r['nfe']:g} | "
                     f"{r['guidance']} | {r['w_stiff']:g} | {r['w_con']:g} | {who} | "
                     f"{r['err_ratio']:.3g} [{r['err_ratio_lo']:.3g}, {r['err_ratio_hi']:.3g}] | "
                     f"{b['fd']:.4g} -> {r['fd']:.4g} | "
                     f"{r['fd_delta']:+.3g} [{r['fd_delta_lo']:+.3g}, {r['fd_delta_hi']:+.3g}] |")
    return "\n".join(lines) + "\n"


def plot_suite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Table 2 (error ratio and FD vs w_stiff) and Fig. 4 (FD vs w_con) per target."""
    plt = pyplot()

    targets = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(3, len(targets), figsize=(4 * len(targets), 10), squeeze=False)
    for j, t in enumerate(targets):
        t2 = [r for r in rows if r["model"] == t and r["table"] == "table2"]
        for n in sorted({r["steps"] for r in t2}):
            pts = sorted((r["w_stiff"], r["err_ratio"], r["fd"]) for r in t2 if r["steps"] == n)
            w, er, fd = zip(*pts)
            axes[0, j].plot(w, er, "o-", label=f"{n} steps")
            axes[1, j].plot(w, fd, "o-", label=f"{n} steps")
        axes[0, j].axhline(1, color="k", lw=0.8, ls="--")
        axes[0, j].set_title(f"{t}: global error / Heun", fontsize=9)
        axes[1, j].set_title(f"{t}: FD vs reference data", fontsize=9)
        for a in axes[:2, j]:
            a.set_xlabel("w_stiff")
            a.legend(fontsize=7)
        f4 = [r for r in rows if r["model"] == t and r["table"] == "fig4"]
        for w in sorted({r["w_stiff"] for r in f4}):
            curve = sorted((r["w_con"], r["fd"]) for r in f4 if r["w_stiff"] == w)
            axes[2, j].plot(*zip(*curve), "o-", label=f"w_stiff={w:g}")
        base = [r["fd"] for r in t2 if r["w_stiff"] == 0 and r["steps"] == (f4[0]["steps"] if f4 else 0)]
        if base:
            axes[2, j].axhline(base[0], color="k", lw=0.8, ls="--", label="Heun")
        axes[2, j].set_xlabel("w_con")
        axes[2, j].set_title(f"{t}: Fig. 4 analogue (FD)", fontsize=9)
        axes[2, j].legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
