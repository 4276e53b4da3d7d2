"""Evidence on the photograph-patch test beds (docs/patches.md). Each part prints a table and saves JSON.

    python scripts/patch_evidence.py accuracy --model patches16   # every solver +- ERK-Guid vs the exact ODE
    python scripts/patch_evidence.py accuracy --model patches32   #   -> docs/patches/accuracy_<model>.{json,md}
    python scripts/patch_evidence.py unet-accuracy  # the U-Net vs a converged Heun solve -> accuracy_patches16-unet.*
    python scripts/patch_evidence.py summary      # every table of docs/patches.md from the saved JSON (rewrites them)
    python scripts/patch_evidence.py stiffness    # per-sample rho-hat along a Heun run        -> docs/patches/stiffness.*
    python scripts/patch_evidence.py overhead     # ERK-Guid correction vs one U-Net eval      -> docs/patches/overhead.json
    python scripts/patch_evidence.py unet-stats   # the U-Net statistic's tolerance            -> docs/patches/unet_stats.json
    python scripts/patch_evidence.py grids        # sample grids                               -> docs/img/patches_*.png

Single-threaded (``torch.set_num_threads(1)``) so that timings measure work, not contention.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from erkguid import edm_sigmas, recommended, sample
from erkguid._io import atomic_write_text
from erkguid._validate import sweep
from erkguid.evaluation import Evaluated, Setting, evaluate, measured_row
from erkguid.experiments._output import pyplot, write_results
from erkguid.experiments.bench import default_setting, steps_for
from erkguid.experiments.demo import image_tiles
from erkguid.experiments.overhead import _case
from erkguid.experiments.profile import profile_run
from erkguid.learned import UNET_STATS, load_learned
from erkguid.metrics import global_error, sliced_wasserstein
from erkguid.models import get_model
from erkguid.noise import randn_from_seeds
from erkguid.recommend import OFF
from erkguid.reference import reference_solve
from erkguid.solvers import get_solver

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "patches"
SOLVERS = ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc")  # adasde: no shipped file
NFE = (5, 7, 11, 15, 23, 31)
SIGMA_MAX = 80.0
SETTINGS = ("plain", "paper", "recommended", "(0.5, 0.5)")


def setting_kwargs(solver: str, nfe: int) -> dict[str, dict[str, Any]]:
    """The compared settings as keyword arguments of :func:`erkguid.sample`: plain, the paper default
    (bench.DEFAULT_SETTING: Table 5 strengths at w_con 0.05), :func:`erkguid.recommended` at the run's NFE, and (0.5, 0.5)."""
    d = default_setting(solver)
    return {"plain": dict(OFF), "paper": {**OFF, "w_stiff": d.w_stiff, "w_con": d.w_con},
            "recommended": recommended(solver, nfe), "(0.5, 0.5)": {**OFF, "w_stiff": 0.5, "w_con": 0.5}}


@sweep
def accuracy_rows(model: str, denoiser: Callable[..., Tensor], x0: Tensor, ref: Tensor, truth: Tensor | None,
                  settings: tuple[str, ...] = SETTINGS) -> list[dict[str, Any]]:
    """Every solver x NFE target x setting from the same noise ``x0``, as :func:`erkguid.evaluation.evaluate` runs and
    rows (:class:`erkguid.evaluation.Row`): error vs ``ref`` per sample, its ratio to the plain solver (paired bootstrap),
    sliced W2 to the reference set (same seeds) and, when exact samples ``truth`` exist, to them. A setting with
    ``w_stiff = 0`` is the plain solver bit for bit (tested invariant), so its row reuses the plain run
    (``same_as_plain``)."""
    rows: list[dict[str, Any]] = []
    jobs = [(s, t) for s in SOLVERS for t in NFE]
    for solver, target in tqdm(jobs, desc="accuracy"):
        n = steps_for(solver, target)
        sig = edm_sigmas(n)
        base: Evaluated | None = None
        for label, kw in setting_kwargs(solver, get_solver(solver).nfe(n)).items():
            if label not in settings:
                continue
            setting = Setting(kw["w_stiff"], kw["w_con"], kw["scaling"], kw["trust"])
            same = kw["w_stiff"] == 0 and base is not None
            if base is not None and same:
                run = replace(base, seconds=0.0)
            else:
                run = evaluate(denoiser, x0, sig, ref, solver=solver, setting=setting, check_divergence=False)
                run = run if kw["w_stiff"] else replace(run, gated=0.0)  # plain: no correction applied
            base = base or run
            metrics = {"sw2_ref": sliced_wasserstein(run.x, ref),
                       "sw2_truth": None if truth is None else sliced_wasserstein(run.x, truth)}
            extras = {"setting": label, "nfe_target": target, "same_as_plain": same}
            rows.append(measured_row(model, solver, n, run, setting, base.err, metrics, extras).flat())
    return rows


def accuracy(name: str, num: int) -> None:
    """Every solver plain / paper default / recommended / (0.5, 0.5), NFE 5..31, against reference_solve (rtol 1e-7)
    of the exact mixture from the same per-sample-seeded noise."""
    m = get_model(name)
    t0 = time.perf_counter()
    x0 = randn_from_seeds(range(num), m.shape, sigma=SIGMA_MAX, dtype=torch.float64)
    ref = reference_solve(m, x0, SIGMA_MAX, rtol=1e-7, atol=1e-8, progress="reference").x
    truth = m.sample(num, seed=10_000, dtype=torch.float64)
    res = {"command": f"python scripts/patch_evidence.py accuracy --model {name} --num {num}", "model": name,
           "num_samples": num, "dtype": "float64", "threads": torch.get_num_threads(),
           "reference": {"kind": "reference_solve (DP5, rtol 1e-7, atol 1e-8), float64", "seconds": time.perf_counter() - t0},
           "truth": {"loglik_mean": float(m.log_prob(truth).mean()),
                     "sw2_truth_vs_truth": sliced_wasserstein(truth, m.sample(num, seed=20_000, dtype=torch.float64)),
                     "sw2_ref_vs_truth": sliced_wasserstein(ref, truth)},
           "rows": accuracy_rows(name, m, x0, ref, truth)}
    res["seconds"] = time.perf_counter() - t0
    md = accuracy_table(res)
    print(md)
    print(f"{res['seconds']:.0f} s; wrote", write_results(OUT, f"accuracy_{name}", res, md))


def unet_accuracy(num: int, ref_steps: int) -> None:
    """The U-Net (float32, as shipped) against a converged Heun solve of its own ODE at ``ref_steps`` steps; its
    convergence is shown by the gap to a solve at half the steps (Heun is second order: the finer solve's error is
    about a third of that gap) and float32 rounding by a float64 run of the same grid on 8 samples."""
    d = load_learned("patches16-unet")
    t0 = time.perf_counter()
    x0 = randn_from_seeds(range(num), d.shape, sigma=SIGMA_MAX)
    with torch.inference_mode():
        ref = sample(d, x0, edm_sigmas(ref_steps), solver="heun", progress=True)
        half = sample(d, x0, edm_sigmas(ref_steps // 2), solver="heun", progress=True)
        k, n64 = min(8, num), 64
        r32 = sample(d, x0[:k], edm_sigmas(n64), solver="heun")
        r64 = sample(d, x0[:k].double(), edm_sigmas(n64), solver="heun")
    gap, rnd = global_error(half, ref), global_error(r32, r64)
    res = {"command": f"python scripts/patch_evidence.py unet-accuracy --num {num} --ref-steps {ref_steps}",
           "model": "learned:patches16-unet", "num_samples": num, "dtype": "float32", "threads": torch.get_num_threads(),
           "reference": {"kind": f"Heun {ref_steps} steps (NFE {2 * ref_steps - 1}), float32", "steps": ref_steps,
                         "half_steps_gap_mean": float(gap.mean()), "half_steps_gap_max": float(gap.max()),
                         "est_error_mean": float(gap.mean()) / 3, "sw2_half_vs_ref": sliced_wasserstein(half, ref),
                         "rounding_samples": k, "rounding_steps": n64, "float32_vs_float64_mean": float(rnd.mean()),
                         "float32_vs_float64_max": float(rnd.max()), "seconds": time.perf_counter() - t0},
           "truth": None}
    with torch.inference_mode():
        res["rows"] = accuracy_rows("learned:patches16-unet", d, x0, ref, None)
    res["seconds"] = time.perf_counter() - t0
    md = accuracy_table(res)
    print(md)
    print(f"{res['seconds']:.0f} s; wrote", write_results(OUT, "accuracy_patches16-unet", res, md))


def _kw_label(r: dict[str, Any]) -> str:
    out = f"({r['w_stiff']:g}, {r['w_con']:g}"
    out += "" if r["scaling"] == "z2" else f", {r['scaling']}"
    return out + ("" if r.get("trust") is None else f", trust {r['trust']:g}") + ")"


def accuracy_table(res: dict[str, Any]) -> str:
    """The markdown of one accuracy run (docs/patches.md embeds it; a test checks they are equal). Plain rows: mean
    global error vs the reference · sliced W2 to the reference set; ERK rows: error / plain error [paired 95% CI] ·
    sliced W2; **bold** where ERK-Guid is significantly worse (interval above 1)."""
    rows, ref = res["rows"], res["reference"]
    nfes = sorted({r["nfe_target"] for r in rows})
    lines = [f"**{res['model']}**: {res['num_samples']} samples, {res['dtype']}; reference: {ref['kind']}; "
             f"`{res['command']}`", ""]
    if "half_steps_gap_mean" in ref:
        lines += [f"Reference check: Heun {ref['steps'] // 2} vs {ref['steps']} steps differ by {ref['half_steps_gap_mean']:.2g} "
                  f"on average (max {ref['half_steps_gap_max']:.2g}; sliced W2 {ref['sw2_half_vs_ref']:.2g}), so the "
                  f"reference's own error is about {ref['est_error_mean']:.2g} (second order: a third of the gap); float32 vs "
                  f"float64 on {ref['rounding_samples']} samples, Heun {ref['rounding_steps']} steps: "
                  f"{ref['float32_vs_float64_mean']:.2g}.", ""]
    if res.get("truth"):
        t = res["truth"]
        lines += [f"Exact samples: mean log-likelihood {t['loglik_mean']:.1f}; sliced W2 between two exact sample sets "
                  f"{t['sw2_truth_vs_truth']:.3g}, reference set vs exact samples {t['sw2_ref_vs_truth']:.3g} (the floor of "
                  f"`sw2_truth` in the JSON).", ""]
    rec: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        if r["setting"] == "recommended" and r["w_stiff"] != 0:
            rec.setdefault(r["solver"], {}).setdefault(_kw_label(r), []).append(r["nfe_target"])
    if rec:
        lines += ["Recommended (w_stiff, w_con[, scaling][, trust]) where not off: " + "; ".join(
            f"{s} " + ", ".join(f"{k} at NFE {'/'.join(map(str, v))}" for k, v in d.items()) for s, d in rec.items())
            + ". Everywhere else `erkguid.recommended` turns ERK-Guid off (= plain).", ""]
    lines += ["| solver | setting | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for solver in dict.fromkeys(r["solver"] for r in rows):
        rs = [r for r in rows if r["solver"] == solver]
        for label in dict.fromkeys(r["setting"] for r in rs):
            cells = []
            for n in nfes:
                r = next((r for r in rs if r["setting"] == label and r["nfe_target"] == n), None)
                if r is None:
                    cells.append("—")
                elif label == "plain":
                    cells.append(f"{r['err_mean']:.3g} · {r['sw2_ref']:.3g}")
                elif r["same_as_plain"]:
                    cells.append("= plain")
                else:
                    b = "**" if r["err_ratio_lo"] > 1 else ""
                    cells.append(f"{b}{r['err_ratio']:.2f}{b} [{r['err_ratio_lo']:.2f}, {r['err_ratio_hi']:.2f}] · "
                                 f"{r['sw2_ref']:.3g}")
            name = "error · SW2 (plain)" if label == "plain" else label
            if label == "paper":
                name += " " + _kw_label(next(r for r in rs if r["setting"] == "paper"))
            lines.append(f"| {solver} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fit_table() -> str:
    """The shipped mixtures' fit records (the ``info`` JSON stored in each ``data/<name>_gmm.npz``)."""
    from importlib import resources

    import numpy as np

    from erkguid.models.builtin import PATCH_FILES

    lines = ["| model | patches | components x rank | fit command | EM fit time (wall) | log-lik per patch |",
             "|---|---|---|---|---|---|"]
    for name, file in PATCH_FILES.items():
        with resources.files("erkguid.data").joinpath(file).open("rb") as fh:
            info = json.loads(str(np.load(fh, allow_pickle=False)["info"]))
        lines.append(f"| {name} | {info['num_patches']:,} | {info['components']} x {info['rank']} | `{info['command']}` | "
                     f"{info['fit_seconds']:.0f} s | {info['loglik_per_patch_float64_fit']:.1f} |")
    return "\n".join(lines) + "\n"


STIFF_SIGMAS = (3.37, 0.47)  # mid-run columns of the compact stiffness table (nearest step start)


def stiffness_table(res: dict[str, Any]) -> str:
    """Compact form of stiffness.json: p10 / p50 / p90 of rho-hat at two mid-run sigmas and every percentile, with
    the spreads p90/p10 and p99/p1, at the last corrected step."""
    def near(rows: list[dict[str, Any]], s: float) -> dict[str, Any]:
        return min(rows, key=lambda r: abs(math.log(r["sigma"] / s)))

    def q(r: dict[str, Any], idx: tuple[int, ...]) -> str:
        return " / ".join(f"{r['rho_p1_p10_p50_p90_p99'][i]:.3g}" for i in idx)

    first = next(iter(res["models"].values()))
    mids = [near(first, s)["sigma"] for s in STIFF_SIGMAS]
    lines = ["| model | " + " | ".join(f"sigma {m:.3g}: p10 / p50 / p90" for m in mids)
             + f" | sigma {first[-1]['sigma']:.2g} (last corrected step): p1 / p10 / p50 / p90 / p99 | p90/p10 there | "
             "p99/p1 there |", "|---|" + "---|" * (len(mids) + 3)]
    for name, rows in res["models"].items():
        last = rows[-1]
        lines.append(f"| {name} | " + " | ".join(q(near(rows, m), (1, 2, 3)) for m in mids)
                     + f" | {q(last, (0, 1, 2, 3, 4))} | {last['p90_over_p10']:.1f} | {last['p99_over_p1']:.1f} |")
    return "\n".join(lines) + "\n"


def overhead_table(res: dict[str, Any]) -> str:
    """overhead.json's timing cases and peak-memory medians."""
    lines = ["| case | one U-Net evaluation | one ERK-Guid correction (estimate + Eq. 19, on a real mid-run pair) | "
             "correction / evaluation |", "|---|---|---|---|"]
    for c in res["cases"]:
        lines.append(f"| {c['case']} | {c['denoiser_eval_ms']:.1f} ms | {c['correction_ms']:.3f} ms | "
                     f"{100 * c['correction_over_denoiser']:.2f}% |")
    lines += ["", "| batch | one state tensor | peak RSS increase, Heun (median of 3) | ERK-Guid (median of 3) | "
              "runs Heun / ERK |", "|---|---|---|---|---|"]
    for m in res["memory"]:
        lines.append(f"| {m['batch']} | {m['state_tensor_MiB']:.3g} MiB | {m['heun_peak_rss_increase_MiB']:.1f} MiB | "
                     f"{m['erk_peak_rss_increase_MiB']:.1f} MiB | "
                     + ", ".join(f"{h:.0f} / {e:.0f}" for h, e in m["runs_heun_erk_MiB"]) + " MiB |")
    return "\n".join(lines) + "\n"


ACCURACY_BEDS = ("patches16", "patches32", "patches16-unet")


def doc_blocks() -> dict[str, str]:
    """Every table of docs/patches.md, keyed by its marker (``<!-- patches:KEY:begin -->`` ... ``:end -->``), formatted
    from the committed JSON (tests/test_patches_docs.py checks the page holds exactly these)."""
    def load(name: str) -> dict[str, Any]:
        return json.loads((OUT / f"{name}.json").read_text())

    blocks = {"fit": fit_table()}
    for bed in ACCURACY_BEDS:
        blocks[f"accuracy-{bed}"] = accuracy_table(load(f"accuracy_{bed}"))
    blocks["stiffness"] = stiffness_table(load("stiffness"))
    blocks["overhead"] = overhead_table(load("overhead"))
    return blocks


def summary() -> None:
    """Print every table of docs/patches.md from the saved JSON, write them to docs/patches/summary.md and into the
    page's marked blocks."""
    blocks = doc_blocks()
    text = "\n".join(f"<!-- patches:{k}:begin -->\n{v}<!-- patches:{k}:end -->\n" for k, v in blocks.items())
    print(text)
    atomic_write_text(OUT / "summary.md", text)
    for bed in ACCURACY_BEDS:  # each run's own table, in this formatter's current form
        atomic_write_text(OUT / f"accuracy_{bed}.md", blocks[f"accuracy-{bed}"])
    doc = ROOT / "docs" / "patches.md"
    page = doc.read_text()
    for key, body in blocks.items():  # the page's marked blocks (tests/test_patches_docs.py checks them)
        begin, end = f"<!-- patches:{key}:begin -->\n", f"<!-- patches:{key}:end -->"
        i, j = page.find(begin), page.find(end)
        if i < 0 or j < i:
            raise SystemExit(f"docs/patches.md lacks the block {begin.strip()} ... {end}")
        page = page[:i + len(begin)] + body + page[j:]
    atomic_write_text(doc, page)
    print(f"wrote {OUT / 'summary.md'}, docs/patches/accuracy_<bed>.md and the tables of {doc}")


def _percentiles(v: torch.Tensor) -> list[float]:
    return torch.quantile(v.double(), torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99], dtype=torch.float64)).tolist()


def stiffness(num: int, steps: int) -> None:
    """rho-hat (Eq. 17) per sample and step along a Heun run at the paper default (w_stiff 1, w_con 0.05), for the
    patch mixtures, the U-Net and digits64: percentiles over samples per step and the spread p90 / p10."""
    res: dict[str, list[dict]] = {}
    models = {"patches16": get_model("patches16"), "patches32": get_model("patches32"),
              "learned:patches16-unet": load_learned("patches16-unet"), "digits64": get_model("digits64")}
    for name, m in models.items():
        x = randn_from_seeds(range(num), m.shape, sigma=80.0)
        r = profile_run(m, x, edm_sigmas(steps), solver="heun", w_stiff=1.0, w_con=0.05, progress=True)
        rows = []
        for s, raw in zip(r["steps"], r["_raw"]["rho"]):
            if raw is None:
                continue
            q = _percentiles(raw)
            rows.append({"i": s["i"], "sigma": s["sigma"], "rho_p1_p10_p50_p90_p99": q, "p90_over_p10": q[3] / q[1],
                         "p99_over_p1": q[4] / q[0]})
        res[name] = rows
    lines = ["| model | sigma | rho-hat p1 / p10 / p50 / p90 / p99 | p90/p10 | p99/p1 |", "|---|---|---|---|---|"]
    for name, rows in res.items():
        for r in rows:
            q = r["rho_p1_p10_p50_p90_p99"]
            lines.append(f"| {name} | {r['sigma']:.3g} | " + " / ".join(f"{v:.3g}" for v in q)
                         + f" | {r['p90_over_p10']:.1f} | {r['p99_over_p1']:.1f} |")
    md = "\n".join(lines) + "\n"
    print(md)

    def plot(path: Path) -> None:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(res), figsize=(4.2 * len(res), 3.6), sharey=True, squeeze=False)
        for ax, (name, rows) in zip(axes[0], res.items()):
            sig = [r["sigma"] for r in rows]
            q = torch.tensor([r["rho_p1_p10_p50_p90_p99"] for r in rows])
            ax.fill_between(sig, q[:, 0], q[:, 4], alpha=0.15, color="C0", label="1-99%")
            ax.fill_between(sig, q[:, 1], q[:, 3], alpha=0.35, color="C0", label="10-90%")
            ax.plot(sig, q[:, 2], "o-", ms=3, color="C0", label="median")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("sigma (step start)")
            ax.set_title(name, fontsize=9)
        axes[0][0].set_ylabel("rho-hat across samples")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"per-sample stiffness estimate along Heun {steps} steps (w_stiff 1, w_con 0.05), {num} samples",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    out = {"command": f"python scripts/patch_evidence.py stiffness --num {num} --steps {steps}", "num_samples": num,
           "steps": steps, "models": res}
    print("wrote", write_results(OUT, "stiffness", out, md, plot))


_MEM_SNIPPET = """
import resource, sys, torch, erkguid as eg
from erkguid.learned import load_learned
torch.set_num_threads(1)
d = load_learned("patches16-unet")
x = 80 * torch.randn(int(sys.argv[2]), 1, 16, 16)
with torch.inference_mode():
    d(x[:2], torch.full((2,), 1.0))  # load the weights and libraries before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    eg.sample(d, x, eg.edm_sigmas(6), w_stiff=float(sys.argv[1]), w_con=0.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def _peak_rss_mib(w_stiff: float, batch: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, str(w_stiff), str(batch)], capture_output=True, text=True,
                         env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def overhead(repeats: int) -> None:
    """erkguid.experiments.overhead's measurement with the U-Net at batch 64: median time of one U-Net
    evaluation, one ERK-Guid correction on a real pair, and whole Heun runs with / without ERK-Guid; peak RSS of a
    Heun vs an ERK-Guid run in fresh processes."""
    d = load_learned("patches16-unet")
    cases = []
    with torch.random.fork_rng(devices=[]):
        for b in (64,):
            x = randn_from_seeds(range(b), d.shape, sigma=80.0)
            cases.append(_case(f"patches16-unet, batch {b}", d, x, 16, repeats))
    mem = []
    for b in (64, 1024):  # three fresh processes each, alternating; medians
        runs = [(_peak_rss_mib(0.0, b), _peak_rss_mib(1.0, b)) for _ in range(3)]
        heun, erk = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        state = b * 256 * 4 / 2**20
        mem.append({"batch": b, "state_tensor_MiB": state, "heun_peak_rss_increase_MiB": heun, "erk_peak_rss_increase_MiB": erk,
                    "extra_state_tensors": (erk - heun) / state, "runs_heun_erk_MiB": runs})
    print("| case | U-Net eval (ms) | correction (ms) | correction / eval | (ERK - Heun) per corrected step / eval |")
    print("|---|---|---|---|---|")
    for c in cases:
        print(f"| {c['case']} | {c['denoiser_eval_ms']:.2f} | {c['correction_ms']:.3f} | {c['correction_over_denoiser']:.4f} | "
              f"{c['run_overhead_per_corrected_step_over_denoiser']:+.4f} |")
    for m in mem:
        print(f"batch {m['batch']}: peak RSS increase (median of 3) Heun {m['heun_peak_rss_increase_MiB']:.1f} MiB, ERK-Guid "
              f"{m['erk_peak_rss_increase_MiB']:.1f} MiB (one state tensor {m['state_tensor_MiB']:.3f} MiB); runs "
              + ", ".join(f"{h:.0f}/{e:.0f}" for h, e in m["runs_heun_erk_MiB"]))
    out = {"command": f"python scripts/patch_evidence.py overhead --repeats {repeats}", "cases": cases, "memory": mem,
           "threads": torch.get_num_threads(), "loadavg": os.getloadavg()}
    print("wrote", write_results(OUT, "overhead", out))


def unet_stats() -> None:
    """What may legitimately move the U-Net's recorded statistic (mean / std of 64 Heun-8 samples): float32 kernel
    paths (another batch split, two threads, float64), against the statistic's sampling spread over seeds (bootstrap
    over the 64 samples)."""
    d = load_learned("patches16-unet")
    rec = d.manifest["sample_stats"]
    n, steps = UNET_STATS["num"], UNET_STATS["steps"]
    sig = edm_sigmas(steps)

    def stats(x: torch.Tensor) -> tuple[float, float]:
        return float(x.double().mean()), float(x.double().std())

    x0 = randn_from_seeds(range(n), d.shape, sigma=80.0)
    base = sample(d, x0, sig, solver="heun")
    variants = {"recorded path (float32, batch 64, 1 thread)": stats(base)}
    variants["float32, batches of 8"] = stats(torch.cat([sample(d, x0[i:i + 8], sig, solver="heun") for i in range(0, n, 8)]))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    variants["float32, 2 threads"] = stats(sample(d, x0, sig, solver="heun"))
    torch.set_num_threads(threads)
    variants["float64"] = stats(sample(d, x0.double(), sig, solver="heun"))
    dev = {k: [abs(v[0] - rec["mean"]), abs(v[1] - rec["std"])] for k, v in variants.items()}
    g = torch.Generator().manual_seed(0)
    boot = torch.tensor([stats(base[torch.randint(0, n, (n,), generator=g)]) for _ in range(1000)], dtype=torch.float64)
    float32_paths = [v for k, v in dev.items() if k.startswith("float32")]
    out = {"command": "python scripts/patch_evidence.py unet-stats", "recorded": rec, "variants": variants,
           "abs_deviation_from_recorded": dev,
           "max_float32_path_deviation": {"mean": max(v[0] for v in float32_paths), "std": max(v[1] for v in float32_paths)},
           "float64_deviation": {"mean": dev["float64"][0], "std": dev["float64"][1]},
           "seed_sampling_std_bootstrap": {"mean": float(boot[:, 0].std()), "std": float(boot[:, 1].std())}}
    print(json.dumps(out, indent=1))
    print("wrote", write_results(OUT, "unet_stats", out))


def grids() -> None:
    """64 samples each: exact draws and Heun 18 steps (NFE 35) from the patch mixtures, Heun 18 steps from the U-Net."""
    plt = pyplot()
    panels = []
    for name in ("patches16", "patches32"):
        m = get_model(name)
        panels.append((f"{name}: exact samples", m.sample(64, seed=0)))
        x0 = randn_from_seeds(range(64), m.shape, sigma=80.0)
        panels.append((f"{name}: Heun 18 steps", sample(m, x0, edm_sigmas(18), solver="heun")))
    u = load_learned("patches16-unet")
    panels.append(("patches16-unet: Heun 18 steps", sample(u, randn_from_seeds(range(64), u.shape, sigma=80.0),
                                                            edm_sigmas(18), solver="heun")))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6))
    for ax, (title, x) in zip(axes, panels):
        ax.imshow(image_tiles(x, 8), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = ROOT / "docs" / "img" / "patches_samples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["accuracy", "unet-accuracy", "summary", "stiffness", "overhead", "unet-stats", "grids"])
    ap.add_argument("--model", choices=["patches16", "patches32"], default="patches16", help="accuracy: the test bed")
    ap.add_argument("--num", type=int, default=None,
                    help="samples [accuracy: 128 (patches16), 64 (patches32); unet-accuracy: 64; stiffness: 256]")
    ap.add_argument("--ref-steps", type=int, default=512, help="unet-accuracy: Heun steps of the reference solve")
    ap.add_argument("--steps", type=int, default=16, help="stiffness: Heun steps")
    ap.add_argument("--repeats", type=int, default=15, help="overhead: timing repeats")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.part == "accuracy":
        accuracy(args.model, args.num or (128 if args.model == "patches16" else 64))
    elif args.part == "unet-accuracy":
        unet_accuracy(args.num or 64, args.ref_steps)
    elif args.part == "summary":
        summary()
    elif args.part == "stiffness":
        stiffness(args.num or 256, args.steps)
    elif args.part == "overhead":
        overhead(args.repeats)
    elif args.part == "unet-stats":
        unet_stats()
    else:
        grids()


if __name__ == "__main__":
    main()
