"""`erkguid bench`: problems x solvers x NFE targets x ERK-Guid settings, with common random numbers.

Every method on a problem starts from the same per-sample-seeded noise; errors are measured per
sample against the problem's reference ODE solution from that noise, and each ERK-Guid setting is
compared with the same solver at the same steps without it by a paired bootstrap ratio
(:func:`erkguid.metrics.ratio_ci`). A :class:`Problem` is any denoiser with a reference solver and,
optionally, a true-sample generator and a log-density, so other suites (e.g. learned models) can
call :func:`run_bench` with their own problems.

AdaSDE runs only with learned coefficients: it gets a row (plain and with ERK-Guid, like every
solver) where a shipped coefficient file (:func:`erkguid.solvers.shipped_for`) matches the problem
and the NFE target exactly, on that file's own grid; otherwise it is skipped with a note in
``res['notes']``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._io import atomic_savefig
from .._validate import sweep
from ..evaluation import Evaluated, Setting, distribution_metrics, evaluate, measured_row, write_results
from ..metrics import global_error, sliced_wasserstein
from ..models import GaussianMixture, LowRankMixture
from ..noise import randn_from_seeds
from ..reference import reference_solve
from ..resolve import Model, resolve_model
from ..sampling import Trace
from ..schedules import edm_sigmas
from ..solvers import adaptive_heun, get_solver, shipped_for
from ._output import pyplot


@dataclass
class Problem:
    """A benchmark problem.

    Attributes:
        name: label in tables.
        denoiser: ``D(x, sigma[B]) -> x0`` (EDM convention).
        shape: per-sample state shape.
        reference: ``reference(x0) -> x(0)``, the accurate ODE solution from ``x0`` at ``sigma_max``.
        truth: optional ``truth(n, seed) -> [n, *shape]`` true samples (distribution metrics).
        log_prob: optional ``log_prob(x) -> [B]`` true log-density (log-likelihood metric).
        sigma_max, sigma_min: the EDM grid's range.
        model_key: the model name shipped AdaSDE coefficients are looked up under (default: ``name``).
    """

    name: str
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    reference: Callable[[Tensor], Tensor]
    truth: Callable[[int, int], Tensor] | None = None
    log_prob: Callable[[Tensor], Tensor] | None = None
    sigma_max: float = 80.0
    sigma_min: float = 0.002
    model_key: str | None = None

    @classmethod
    def from_gmm(cls, model: GaussianMixture | LowRankMixture, name: str | None = None, rtol: float = 1e-7) -> Problem:
        """An exact-score mixture; its reference is closed-form for one Gaussian, else
        :func:`~erkguid.reference_solve` at ``rtol``."""
        smax = 80.0
        if model.num_components == 1:
            def ref(x0: Tensor) -> Tensor:
                return model.ode_solution(x0.double(), smax, 0.0)
        else:
            def ref(x0: Tensor) -> Tensor:
                return reference_solve(model, x0, smax, rtol=rtol, atol=rtol / 10).x
        return cls(
            name or model.name, model, tuple(model.shape), ref,
            truth=lambda n, seed: model.sample(n, seed=seed, dtype=torch.float64), log_prob=model.log_prob, sigma_max=smax,
        )


    @classmethod
    def from_model(cls, model: Model, rtol: float = 1e-7) -> Problem:
        """Any resolved model: reference by :func:`~erkguid.reference_solve`; truth and log-density from its exact
        distribution when it has one (e.g. the mixture a shipped learned model was trained on)."""
        t = model.truth

        def ref(x0: Tensor) -> Tensor:
            return reference_solve(model.denoiser, x0, model.sigma_max, rtol=rtol, atol=rtol / 10).x

        truth = None if t is None else (lambda n, seed: t.sample(n, seed=seed, dtype=torch.float64))
        return cls(model.name, model.denoiser, tuple(model.shape), ref, truth=truth, log_prob=None if t is None else t.log_prob,
                   sigma_max=model.sigma_max, sigma_min=model.sigma_min)


# Paper defaults (App. B.2: w_con = 0.05 for the solver study; Table 5: w_stiff per solver).
DEFAULT_SETTING = {"heun": Setting(1.0, 0.05), "dpm2": Setting(1.25, 0.05), "deis": Setting(2.5, 0.05)}
FALLBACK_SETTING = Setting(1.0, 0.05)
GRID_SETTINGS = tuple(Setting(w, c) for w in (0.1, 0.25, 0.5, 1.0, 2.0) for c in (0.0, 1.0, 10.0))
ALL_SOLVERS = ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc", "adasde")


def default_setting(solver: str) -> Setting:
    return DEFAULT_SETTING.get(solver, FALLBACK_SETTING)


@dataclass
class BenchConfig:
    problems: Sequence[str | Problem] = ("tree2d", "digits64", "gauss")
    solvers: Sequence[str] = ALL_SOLVERS
    nfe_targets: Sequence[int] = (7, 15)
    settings: Sequence[Setting] | None = None  # None: plain + each solver's default
    num_samples: int = 256
    seed: int = 0
    baselines: bool = False  # adaptive step (B.6) and Heun + corrector (B.7) rows
    adaptive_taus: Sequence[float] = (1.0, 5.0)
    pc_settings: Sequence[tuple[float, bool]] = ((0.02, False), (0.02, True))
    threads: int | None = 1
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = BenchConfig()
FULL = BenchConfig(
    problems=("tree2d", "digits64"), nfe_targets=(7, 11, 15, 23), num_samples=512,
    settings=(Setting(),) + GRID_SETTINGS, baselines=True,
)


def max_steps(solver: str, nfe: int) -> int | None:
    """The largest step count whose NFE does not exceed the budget ``nfe`` (None if not even one step fits)."""
    spec = get_solver(solver)
    ok = [n for n in range(1, nfe + 1) if spec.nfe(n) <= nfe]
    return max(ok) if ok else None


def steps_for(solver: str, nfe: int) -> int:
    """:func:`max_steps` with a floor of 2 steps (which may then exceed a budget below the solver's 2-step NFE)."""
    return max(2, max_steps(solver, nfe) or 2)


def _problem(p: str | Problem) -> Problem:
    """A problem from any model spec (:func:`erkguid.resolve.resolve_model`); exact mixtures keep their closed forms."""
    if isinstance(p, Problem):
        return p
    m = resolve_model(p)
    if m.truth is not None and m.denoiser == m.truth.denoise:
        return Problem.from_gmm(m.truth)
    return Problem.from_model(m)


@sweep
def run_bench(config: BenchConfig = QUICK, out_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the grid of ``config``; return ``{'rows': [...], 'problems': {...}, 'seconds': ...}`` and write
    ``bench.json``, ``bench.md`` and one ``bench_<metric>.png`` per metric to ``out_dir`` when given."""
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        res = _run(config, progress)
    finally:
        torch.set_num_threads(old_threads)
    if out_dir is not None:
        res["files"] = write_results(out_dir, "bench", res, format_tables(res["rows"])) + plot_bench(res["rows"], Path(out_dir))
    return res


def _run(config: BenchConfig, progress: bool) -> dict[str, Any]:
    for s in config.solvers:
        get_solver(s)
    t_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    notes: list[str] = []
    for p in config.problems:
        prob = _problem(p)
        seeds = list(range(config.seed, config.seed + config.num_samples))
        x0 = randn_from_seeds(seeds, prob.shape, sigma=prob.sigma_max, dtype=torch.float64)
        t = time.perf_counter()
        ref = prob.reference(x0).double()
        info[prob.name] = {"reference_seconds": time.perf_counter() - t}
        truth = prob.truth(config.num_samples, 10_000 + config.seed) if prob.truth else None
        if truth is not None and prob.truth is not None:
            other = prob.truth(config.num_samples, 20_000 + config.seed)
            info[prob.name]["truth_vs_truth_sliced_w2"] = sliced_wasserstein(truth, other)
        jobs = []
        for solver in config.solvers:
            sets = list(config.settings) if config.settings is not None else [Setting(), default_setting(solver)]
            if config.settings is not None and default_setting(solver) not in sets:
                sets.append(default_setting(solver))
            if not any(s.w_stiff == 0 for s in sets):
                sets.insert(0, Setting())
            sets.sort(key=lambda st: st.w_stiff != 0)  # plain first: it is every ratio's baseline
            for target in config.nfe_targets:
                grid, opts = _solver_grid(solver, target, prob, seeds, notes)
                if grid is None:
                    continue
                for setting in sets:
                    jobs.append((solver, target, setting, grid, opts))
        base_err: dict[tuple[str, int], Tensor] = {}
        for solver, target, s, sig, opts in tqdm(jobs, disable=not progress, desc=f"bench {prob.name}"):
            n = sig.numel() - 1
            run = evaluate(prob.denoiser, x0, sig, ref, solver=solver, setting=s, check_divergence=False, **opts,
                           **config.extra)  # rows show where ERK-Guid hurts
            if s.w_stiff == 0:
                base_err[(solver, n)] = run.err
            rows.append(measured_row(prob.name, solver, n, run, s, base_err[(solver, n)],
                                     distribution_metrics(run.x, truth, prob.log_prob),
                                     {"default": s == default_setting(solver), "nfe_target": target}).flat())
        if config.baselines:
            rows += _baseline_rows(config, prob, x0, ref, truth, seeds, base_err, progress)
    return {"config": _config_dict(config), "problems": info, "rows": rows, "notes": notes,
            "seconds": time.perf_counter() - t_all}


def _solver_grid(solver: str, target: int, prob: Problem, seeds: list[int], notes: list[str]
                 ) -> tuple[Tensor | None, dict[str, Any]]:
    """The grid (and sample() keywords) for ``solver`` at NFE ``target`` on ``prob``; ``(None, {})`` when skipped.

    AdaSDE uses a shipped coefficient file for this problem at exactly this NFE (its own grid, per-sample
    inflation seeds); every other solver the EDM grid with :func:`steps_for` steps."""
    if solver != "adasde":
        return edm_sigmas(steps_for(solver, target), prob.sigma_min, prob.sigma_max), {}
    key = prob.model_key or prob.name
    coef = shipped_for(key, target)
    if coef is None:
        notes.append(f"adasde skipped on {prob.name} at NFE {target}: no shipped coefficient file {key}-nfe{target} "
                     f"(erkguid.solvers.shipped_names() lists them)")
        return None, {}
    if abs(float(coef.sigmas[0]) - prob.sigma_max) > 1e-9 * prob.sigma_max:
        notes.append(f"adasde skipped on {prob.name} at NFE {target}: the shipped grid starts at {float(coef.sigmas[0]):g}, "
                     f"the problem at sigma_max {prob.sigma_max:g}")
        return None, {}
    return coef.grid(), {"solver_options": {"coefficients": coef}, "seeds": [s + 60_000 for s in seeds]}


def _baseline_rows(config, prob, x0, ref, truth, seeds, base_err, progress) -> list[dict[str, Any]]:
    """Adaptive Heun (B.6) and Heun + Langevin corrector (B.7) at each NFE target, vs plain Heun at the same target."""
    rows = []
    for target in tqdm(config.nfe_targets, disable=not progress, desc=f"baselines {prob.name}"):
        n = steps_for("heun", target)
        sig = edm_sigmas(n, prob.sigma_min, prob.sigma_max)
        base = base_err.get(("heun", n))
        for tau in config.adaptive_taus:
            t = time.perf_counter()
            r = adaptive_heun(prob.denoiser, x0, sig, tau=tau, **config.extra)
            run = Evaluated(r.x, global_error(r.x, ref), float(r.nfe.double().mean()), 0.0, time.perf_counter() - t, Trace())
            rows.append(_baseline_row(prob, f"adaptive_heun(tau={tau:g})", n, run, target, truth, base))
        n_pc = steps_for("heun_pc", target)
        for r_pc, stoch in config.pc_settings:
            run = evaluate(prob.denoiser, x0, edm_sigmas(n_pc, prob.sigma_min, prob.sigma_max), ref, solver="heun_pc",
                           seeds=[s + 50_000 for s in seeds], solver_options={"r": r_pc, "stochastic": stoch}, **config.extra)
            rows.append(_baseline_row(prob, f"heun_pc(r={r_pc:g},{'stoch' if stoch else 'det'})", n_pc, run, target, truth, base))
    return rows


def _baseline_row(prob, name, n, run, target, truth, base) -> dict[str, Any]:
    return measured_row(prob.name, name, n, run, Setting(scaling="-"), base, distribution_metrics(run.x, truth, prob.log_prob),
                        {"gated": 0.0, "setting": "baseline", "default": False, "nfe_target": target}).flat()


def _config_dict(c: BenchConfig) -> dict[str, Any]:
    d = asdict(c)
    d["problems"] = [p if isinstance(p, str) else p.name for p in c.problems]
    return d


def format_tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per problem: every row, ratio vs the same solver without ERK-Guid."""
    out = []
    for prob in dict.fromkeys(r["model"] for r in rows):
        out.append(f"### {prob}\n")
        out.append("| method | setting | NFE | err mean | err median | err / plain [95% CI] | sliced W2 | energy | log-lik "
                   "| gated | s |")
        out.append("|" + "---|" * 11)
        for r in rows:
            if r["model"] != prob:
                continue
            ci = "—" if r["setting"] == "plain" else f"{r['err_ratio']:.3f} [{r['err_ratio_lo']:.3f}, {r['err_ratio_hi']:.3f}]"
            setting = r["setting"] + (" (default)" if r["default"] else "")
            out.append(
                f"| {r['solver']} | {setting} | {r['nfe']:.4g} | {r['err_mean']:.4f} | {r['err_median']:.4f} | {ci} | "
                f"{r['sliced_w2']:.4f} | {r['energy']:.5f} | {r['loglik']:.2f} | {r['gated']:.2f} | {r['seconds']:.2f} |"
            )
        out.append("")
    return "\n".join(out)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Per problem and NFE target: each solver's plain, default and best (lowest mean error) ERK setting,
    and the best method overall. 'best' is selected on the same samples it is reported on."""
    out: list[str] = []
    for prob in dict.fromkeys(r["model"] for r in rows):
        head = len(out)
        several = False  # a best ERK setting other than the default is shown somewhere
        targets = sorted({r["nfe_target"] for r in rows if r["model"] == prob})
        out.append("| solver | " + " | ".join(f"NFE≈{t}" for t in targets) + " |")
        out.append("|---|" + "---|" * len(targets))
        winners: dict[str, Any] = {}
        for solver in dict.fromkeys(r["solver"] for r in rows if r["model"] == prob):
            cells = []
            for t in targets:
                rs = [r for r in rows if r["model"] == prob and r["solver"] == solver and r["nfe_target"] == t]
                if not rs:
                    cells.append("—")
                    continue
                best = min(rs, key=lambda r: r["err_mean"])
                if winners.get(t) is None or best["err_mean"] < winners[t]["err_mean"]:
                    winners[t] = best
                if rs[0]["setting"] == "baseline":
                    cells.append(f"{rs[0]['err_mean']:.4f} (NFE {rs[0]['nfe']:.3g})")
                    continue
                plain = next(r for r in rs if r["setting"] == "plain")
                dflt = next((r for r in rs if r["default"]), None)
                erk = [r for r in rs if r["setting"] != "plain"]
                best_erk = min(erk, key=lambda r: r["err_mean"]) if erk else None
                cell = f"{plain['err_mean']:.4f}"
                if dflt is not None:
                    cell += f" / {dflt['err_mean']:.4f} ({dflt['err_ratio']:.2f})"
                if best_erk is not None and best_erk is not dflt:
                    cell += f" / {best_erk['err_mean']:.4f} [{best_erk['setting']}] ({best_erk['err_ratio']:.2f})"
                    several = True
                cells.append(cell)
            out.append(f"| {solver} | " + " | ".join(cells) + " |")
        what = "plain / default ERK (ratio) / best ERK [setting] (ratio)" if several else "plain / default ERK (ratio)"
        out.insert(head, f"### {prob}: mean global error ({what})\n")
        out.append("")
        out.append("Best overall: " + "; ".join(
            f"NFE≈{t}: {w['solver']} {w['setting']} ({w['err_mean']:.4f})" for t, w in sorted(winners.items())) + "\n")
    return "\n".join(out)


METRICS = ("err_mean", "sliced_w2", "energy", "loglik")


def plot_bench(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """One PNG per metric: metric vs NFE, a panel per problem, each solver plain (solid) and its best
    ERK-Guid setting per NFE (dashed); baselines dotted."""
    plt = pyplot()

    probs = list(dict.fromkeys(r["model"] for r in rows))
    files = []
    for metric in METRICS:
        fig, axes = plt.subplots(1, len(probs), figsize=(5.2 * len(probs), 4.2), squeeze=False)
        for ax, prob in zip(axes[0], probs):
            rs = [r for r in rows if r["model"] == prob]
            methods = list(dict.fromkeys(r["solver"] for r in rs))
            for k, m in enumerate(methods):
                color = f"C{k % 10}"
                mr = [r for r in rs if r["solver"] == m]
                if mr[0]["setting"] == "baseline":
                    pts = sorted((r["nfe"], r[metric]) for r in mr)
                    ax.plot(*zip(*pts), ":", marker="x", color=color, label=m)
                    continue
                plain = sorted((r["nfe"], r[metric]) for r in mr if r["setting"] == "plain")
                ax.plot(*zip(*plain), "-o", color=color, ms=3, label=m)
                best = []
                for t in sorted({r["nfe_target"] for r in mr}):
                    erk = [r for r in mr if r["nfe_target"] == t and r["setting"] != "plain"]
                    if erk:
                        b = min(erk, key=lambda r: r["err_mean"])
                        best.append((b["nfe"], b[metric]))
                if best:
                    ax.plot(*zip(*best), "--s", color=color, ms=3, alpha=0.8)
            ax.set_xscale("log")
            if metric != "loglik":
                ax.set_yscale("log")
            ax.set_xlabel("NFE")
            ax.set_ylabel(metric)
            ax.set_title(f"{prob} (solid: plain, dashed: best ERK)", fontsize=9)
            ax.legend(fontsize=6)
        fig.tight_layout()
        path = out / f"bench_{metric}.png"
        atomic_savefig(fig, path, dpi=100)
        plt.close(fig)
        files.append(str(path))
    return files
