"""`erkguid adasde-eval`: AdaSDE vs its gamma = 0 twin, untrained DPM-Solver-2, other solvers and the teacher.

Models are exact mixtures (``tree2d``, ``digits64``) or shipped learned models (``learned:tree2d-main``,
``learned:digits-main``); for a learned model every distribution metric is against the TRUE distribution
(exact samples of the mixture it was trained on, its exact log-density), and for ``learned:digits-*``
also FD / KID in the shipped digits classifier's feature space against the real digits
(:func:`erkguid.models.digits_data`). For each model and NFE, ``seeds`` distillations of AdaSDE (gamma_max > 0) and of its
deterministic twin (gamma_max = 0, identical r/a/c training, same seed, same batches) are run;
every arm then samples from the same per-sample-seeded initial noise (and, for the stochastic
arms, the same per-sample inflation seeds). Metrics are against the *true* distribution at
sigma_min (independent exact samples): sliced W2, energy distance and the exact log-likelihood
log p(x; sigma_min); the distance to the teacher from the same noise is reported separately.
Paired differences across distillation seeds come with a t-interval (95 %).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import atomic_savefig
from ..evaluation import Setting, distribution_metrics, evaluate, write_results
from ..metrics import global_error, paired_t, sliced_wasserstein
from ..noise import randn_from_seeds
from ..schedules import edm_sigmas
from ..solvers import SOLVERS, AdaSDECoefficients
from ..training.adasde import (
    DistillConfig,
    distill_adasde,
    dpm2_teacher,
    resolve_model_spec,
    student_levels,
    teacher_levels,
)
from ._output import pyplot

METRICS = ("sliced_w2", "energy", "loglik", "to_teacher")
FEATURE_METRICS = ("fd", "kid_x1e3")
LABELS = {"sliced_w2": "sliced W2 ↓", "energy": "energy ↓", "loglik": "log-lik ↑", "to_teacher": "dist. to teacher ↓",
          "fd": "FD (digits feat.) ↓", "kid_x1e3": "KID×1e3 ↓"}


class _Features:
    """FD / KID of samples against the real digits in the shipped classifier's feature space."""

    def __init__(self) -> None:
        from ..feature_metrics import DigitsFeatures, FeatureReference
        from ..models import digits_data

        self.ext = DigitsFeatures()
        self.real = self.ext(digits_data()[0])[0]
        self.ref = FeatureReference(self.real)

    def __call__(self, x: torch.Tensor) -> dict[str, float]:
        from ..feature_metrics import kid

        f = self.ext(x.float())[0]
        return {"fd": self.ref.fd(f), "kid_x1e3": 1e3 * kid(f, self.real, subset_size=1000)[0]}


def _metrics(true_model: Any, x: torch.Tensor, err: torch.Tensor, truth: torch.Tensor, sigma_min: float,
             features: _Features | None = None) -> dict[str, float]:
    """Distribution metrics against the true samples and the exact log-density at sigma_min, and the mean per-sample
    error ``err`` vs the teacher from the same noise."""
    out = distribution_metrics(x, truth, lambda v: true_model.log_prob(v, sigma_min), max_points=2048)
    out["to_teacher"] = float(err.mean())
    if features is not None:
        out.update(features(x))
    return out


def run_adasde_eval(
    out_dir: str | Path | None = "runs/adasde",
    *,
    models: tuple[str, ...] = ("tree2d", "digits64"),
    nfes: tuple[int, ...] = (3, 5, 7),
    seeds: int = 5,
    iters: int = 40,
    batch: int = 64,
    num_samples: int = 2048,
    w_stiff: float = 0.5,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the study; return ``{'results': [...]}`` and write JSON, markdown and PNG to ``out_dir``."""
    out = Path(out_dir) if out_dir is not None else None
    for nfe in nfes:  # every setting checked before minutes of work
        DistillConfig(nfe=nfe, iters=iters, batch=batch).check()
    for mname in models:
        resolve_model_spec(mname)
    results: list[dict[str, Any]] = []
    jobs = [(m, n) for m in models for n in nfes]
    for mname, nfe in tqdm(jobs, disable=not progress, desc="adasde-eval"):
        model, shape, true_model = resolve_model_spec(mname)
        features = _Features() if mname.startswith("learned:digits") else None
        metrics = METRICS + (FEATURE_METRICS if features is not None else ())
        gamma_max = 0.02 if nfe <= 3 else 0.01  # the released CIFAR-10 runs' values
        base = DistillConfig(nfe=nfe, gamma_max=gamma_max, iters=iters, batch=batch)
        levels = student_levels(base)
        grid = torch.cat([levels, levels.new_zeros(1)])
        sigma_min = float(levels[-1])
        x0 = randn_from_seeds(range(num_samples), shape, sigma=base.sigma_max, dtype=torch.float64)
        noise_seeds = list(range(10**6, 10**6 + num_samples))
        truth = true_model.sample(num_samples, seed=777, sigma=sigma_min, dtype=torch.float64)
        truth2 = true_model.sample(num_samples, seed=778, sigma=sigma_min, dtype=torch.float64)
        tl, keep = teacher_levels(levels, base)
        teacher = dpm2_teacher(model, x0, tl, keep)[-1]
        row: dict[str, Any] = {"model": mname, "nfe": nfe, "gamma_max": gamma_max, "grid": levels.tolist(),
                               "teacher_nfe": 2 * (tl.numel() - 1), "floor_sliced_w2": sliced_wasserstein(truth2, truth),
                               "floor_loglik": float(true_model.log_prob(truth, sigma_min).mean()), "arms": {}, "learned": {},
                               "metrics": list(metrics), "truth": f"{true_model.name} exact samples"}
        if features is not None:
            row["floor_fd"] = features(truth)["fd"]
        arms: dict[str, list[dict[str, float]]] = {}

        def run(name: str, grid: torch.Tensor, solver: str = "adasde", w_stiff: float = 0.0, **kw: Any) -> None:
            ev = evaluate(model, x0, grid, teacher, solver=solver, setting=Setting(w_stiff), **kw)  # noqa: B023
            arms.setdefault(name, []).append(_metrics(true_model, ev.x, ev.err, truth, sigma_min, features))  # noqa: B023

        arms["teacher"] = [_metrics(true_model, teacher, global_error(teacher, teacher), truth, sigma_min, features)]
        neutral = AdaSDECoefficients.neutral(levels, gamma_max=0.0, afs=True)
        run("dpm2 untrained (AFS)", grid, solver_options={"coefficients": neutral})
        for name, spec in SOLVERS.items():
            steps = None if name == "adasde" else next((k for k in range(1, 40) if spec.nfe(k) == nfe), None)
            if steps is None:
                continue
            try:
                run(f"{name} (EDM grid)", edm_sigmas(steps), solver=name, seeds=noise_seeds)
            except ValueError as exc:  # a solver that needs options we do not know
                row.setdefault("skipped", {})[name] = str(exc)
        for s in range(seeds):
            for arm, g in (("adasde", gamma_max), ("twin (gamma=0)", 0.0)):
                cfg = DistillConfig(**{**base.__dict__, "gamma_max": g, "seed": s})
                t0 = time.perf_counter()
                coef = distill_adasde(model, cfg, shape=shape, progress=False, meta={"model": mname}).coefficients
                row["learned"].setdefault(arm, []).append({**coef.table(), "seconds": time.perf_counter() - t0})
                if out is not None:
                    coef.save(out / "coefficients" / f"{mname.replace(':', '-')}_nfe{nfe}_{'adasde' if g else 'twin'}_s{s}.json")
                opts = {"coefficients": coef}
                run(arm, grid, solver_options=opts, seeds=noise_seeds)
                if g > 0:
                    run(f"adasde + ERK-Guid (w={w_stiff:g})", grid, w_stiff=w_stiff, solver_options=opts, seeds=noise_seeds)
        for name, vals in arms.items():
            row["arms"][name] = {k: [v[k] for v in vals] for k in metrics}
        a, t = row["arms"]["adasde"], row["arms"]["twin (gamma=0)"]
        e = row["arms"][f"adasde + ERK-Guid (w={w_stiff:g})"]
        row["paired"] = {
            "adasde - twin": {k: paired_t(a[k], t[k]) for k in metrics},
            "erk - adasde": {k: paired_t(e[k], a[k]) for k in metrics},
        }
        results.append(row)
    res = {"settings": {"models": models, "nfes": nfes, "seeds": seeds, "iters": iters, "batch": batch,
                        "num_samples": num_samples, "w_stiff": w_stiff}, "results": results}
    if out is not None:
        res["files"] = write_results(out, "adasde_eval", res, format_tables(res), lambda path: plot_eval(path, res))
    return res


def _ms(v: list[float], digits: int = 4) -> str:
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


def format_tables(res: dict[str, Any]) -> str:
    """Markdown: one table per model and NFE, then the paired differences and learned gamma."""
    lines: list[str] = []
    for r in res["results"]:
        grid = ", ".join(f"{s:.4g}" for s in r["grid"])
        keys = r.get("metrics", METRICS)
        head = " | ".join(LABELS[k] for k in keys)
        fd = f"; FD of true samples {r['floor_fd']:.4f}" if "floor_fd" in r else ""
        lines += [f"#### {r['model']}, {r['nfe']} NFE (grid {grid}; teacher {r['teacher_nfe']} NFE)", "",
                  f"truth: {r.get('truth', 'exact samples')}; noise floor: sliced W2 truth vs truth {r['floor_sliced_w2']:.4f}; "
                  f"log-lik of true samples {r['floor_loglik']:.3f}{fd}",
                  "", f"| arm | {head} |", "|---|" + "---|" * len(keys)]
        digits = {"energy": 5, "loglik": 3}
        for name, m in r["arms"].items():
            cells = [_ms(m[k], digits.get(k, 4)) for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"| paired difference (mean [95% t-CI], #seeds first lower) | {head} |", "|---|" + "---|" * len(keys)]
        for name, p in r["paired"].items():
            cells = [f"{p[k]['mean']:+.4g} [{p[k]['lo']:+.3g}, {p[k]['hi']:+.3g}] ({p[k]['a_lower']}/{p[k]['n']})"
                     for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        g = np.array([x["gamma"] for x in r["learned"]["adasde"]])
        rr = np.array([x["r"] for x in r["learned"]["adasde"]])
        secs = [x["seconds"] for v in r["learned"].values() for x in v]
        lines += ["", f"learned gamma per step (mean over seeds): {np.round(g.mean(0), 5).tolist()}; "
                  f"r: {np.round(rr.mean(0), 3).tolist()}; distillation {np.mean(secs):.1f} s per run", ""]
    return "\n".join(lines) + "\n"


def plot_eval(path: Path, res: dict[str, Any]) -> None:
    """Sliced W2 and log-likelihood vs NFE per model and arm (mean ± sd over distillation seeds)."""
    plt = pyplot()
    models = list(dict.fromkeys(r["model"] for r in res["results"]))
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 4.2 * len(models)), squeeze=False)
    for row_ax, m in zip(axes, models):
        rows = [r for r in res["results"] if r["model"] == m]
        arms = list(dict.fromkeys(a for r in rows for a in r["arms"]))
        for ax, key, title in zip(row_ax[:2], ("sliced_w2", "loglik"), ("sliced W2 to truth (log)", "log-lik at sigma_min")):
            for k, arm in enumerate(arms):
                pts = [(r["nfe"], np.mean(r["arms"][arm][key]), np.std(r["arms"][arm][key])) for r in rows if arm in r["arms"]]
                if pts:
                    n, mu, sd = zip(*pts)
                    learned = arm.startswith(("adasde", "twin", "teacher"))
                    ax.errorbar(n, mu, yerr=sd, marker="o" if learned else "x", capsize=3, label=arm, color=plt.cm.tab20(k % 20),
                                lw=2.2 if learned else 0.9, ls="-" if learned else ":")
            ax.set_yscale("log" if key == "sliced_w2" else "symlog")
            ax.set_title(f"{m}: {title}")
            ax.set_xlabel("NFE")
        row_ax[0].legend(fontsize=7)
        ax = row_ax[2]
        for r in rows:
            g = np.array([x["gamma"] for x in r["learned"]["adasde"]])
            ax.plot(range(g.shape[1]), g.mean(0), marker="o", label=f"{r['nfe']} NFE (gamma_max {r['gamma_max']})")
        ax.set_title(f"{m}: learned gamma per step")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
