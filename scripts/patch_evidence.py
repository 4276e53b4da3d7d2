"""Evidence on the photograph-patch test beds (docs/patches.md). Each part prints a table and saves JSON.

    python scripts/patch_evidence.py accuracy --model patches16   # every solver +- ERK-Guid vs the exact ODE
    python scripts/patch_evidence.py accuracy --model patches32   #   -> docs/patches/accuracy_<model>.*
    python scripts/patch_evidence.py summary      # compact error-ratio tables of the saved runs -> docs/patches/summary.md
    python scripts/patch_evidence.py stiffness    # per-sample rho-hat along a Heun run        -> docs/patches/stiffness.*
    python scripts/patch_evidence.py overhead     # ERK-Guid correction vs one U-Net eval      -> docs/patches/overhead.json
    python scripts/patch_evidence.py unet-stats   # the U-Net statistic's tolerance            -> docs/patches/unet_stats.json
    python scripts/patch_evidence.py grids        # sample grids                               -> docs/img/patches_*.png

Single-threaded (``torch.set_num_threads(1)``) so that timings measure work, not contention.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from erkguid import edm_sigmas, sample
from erkguid.experiments._output import pyplot, write_results
from erkguid.experiments.bench import BenchConfig, Problem, Setting, format_tables, plot_bench, run_bench, summarize
from erkguid.experiments.demo import image_tiles
from erkguid.experiments.overhead import _case
from erkguid.experiments.profile import profile_run
from erkguid.learned import UNET_STATS, load_learned
from erkguid.models import get_model
from erkguid.noise import randn_from_seeds

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "patches"
SOLVERS = ("euler", "heun", "dpm2", "dpmpp_2m", "deis", "ipndm", "unipc")
NFE = (5, 7, 11, 15, 23, 31)
MODERATE = Setting(0.5, 0.5)


def accuracy(name: str, num: int) -> None:
    """Every solver plain, at its paper default (bench.DEFAULT_SETTING) and at (0.5, 0.5), NFE 5..31, against
    reference_solve (rtol 1e-7) from the same per-sample-seeded noise."""
    m = get_model(name)
    cfg = BenchConfig(problems=(Problem.from_gmm(m),), solvers=SOLVERS, nfe_targets=NFE, settings=(Setting(), MODERATE),
                      num_samples=num)
    res = run_bench(cfg, progress=True)
    # the log-likelihood of true samples (bench's own truth set): what an accurate sampler's log-lik column should match
    res["problems"][name]["truth_loglik"] = float(m.log_prob(m.sample(num, seed=10_000, dtype=torch.float64)).mean())
    res["command"] = f"python scripts/patch_evidence.py accuracy --model {name} --num {num}"
    res["threads"] = torch.get_num_threads()
    md = format_tables(res["rows"]) + "\n" + summarize(res["rows"])
    print(md)
    (OUT / name).mkdir(parents=True, exist_ok=True)
    files = write_results(OUT, f"accuracy_{name}", res, md) + plot_bench(res["rows"], OUT / name)
    print(f"{res['seconds']:.0f} s; wrote {', '.join(files)}")


def ratio_table(rows: list[dict]) -> str:
    """Compact: error / plain error [95% CI] per solver and NFE, one line per ERK setting (plain error first)."""
    nfes = sorted({r["nfe_target"] for r in rows})
    out = ["| solver | setting | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for solver in dict.fromkeys(r["solver"] for r in rows):
        rs = [r for r in rows if r["solver"] == solver]
        for label in dict.fromkeys(r["setting"] for r in rs):
            cells = []
            for n in nfes:
                r = next((r for r in rs if r["setting"] == label and r["nfe_target"] == n), None)
                if r is None:
                    cells.append("—")
                elif label == "plain":
                    cells.append(f"{r['err_mean']:.3g}")
                else:
                    flag = "**" if r["err_ratio_lo"] > 1 else ""  # bold: significantly worse than plain
                    cells.append(f"{flag}{r['err_ratio']:.2f}{flag} [{r['err_ratio_lo']:.2f}, {r['err_ratio_hi']:.2f}]")
            name = label + (" (default)" if any(r["default"] for r in rs if r["setting"] == label) else "")
            out.append(f"| {solver} | {'error (plain)' if label == 'plain' else name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def summary() -> None:
    """The compact error-ratio tables of the saved accuracy runs (docs/patches/accuracy_<model>.json)."""
    md = []
    for name in ("patches16", "patches32"):
        path = OUT / f"accuracy_{name}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        p = res["problems"][name]
        md.append(f"### {name} ({res['config']['num_samples']} samples; `{res['command']}`)\n")
        md.append(f"Plain rows: mean global error vs the exact ODE (reference_solve, rtol 1e-7). ERK rows: error / plain "
                  f"error with its paired-bootstrap 95% CI; **bold** = significantly worse. True samples' mean "
                  f"log-likelihood {p['truth_loglik']:.1f}; sliced W2 between two true sample sets "
                  f"{p['truth_vs_truth_sliced_w2']:.3f}.\n")
        md.append(ratio_table(res["rows"]))
    text = "\n".join(md)
    print(text)
    (OUT / "summary.md").write_text(text)
    print(f"wrote {OUT / 'summary.md'}")


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
    ap.add_argument("part", choices=["accuracy", "summary", "stiffness", "overhead", "unet-stats", "grids"])
    ap.add_argument("--model", choices=["patches16", "patches32"], default="patches16", help="accuracy: the test bed")
    ap.add_argument("--num", type=int, default=None, help="samples [accuracy: 128 (patches16), 64 (patches32); stiffness: 256]")
    ap.add_argument("--steps", type=int, default=16, help="stiffness: Heun steps")
    ap.add_argument("--repeats", type=int, default=15, help="overhead: timing repeats")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.part == "accuracy":
        accuracy(args.model, args.num or (128 if args.model == "patches16" else 64))
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
