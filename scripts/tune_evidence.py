"""Evidence for `erkguid tune` (docs/tune.md): tuned vs the best plain peer on standard grids, per model and NFE.

    OMP_NUM_THREADS=1 python scripts/tune_evidence.py --out docs/tune

For every model (the shipped learned models, the exact mixtures and a tiny diffusers UNet built offline with random
weights, saved with save_pretrained and loaded through the `diffusers:DIR` spec) and every NFE, runs
:func:`erkguid.tune.tune` (calibration seeds 0.., held-out seeds 1e6..) and adds k-diffusion's ``sample_lms`` and
``sample_dpmpp_2m`` on the EDM (rho 7) and log-SNR grids as further plain peers on the same held-out seeds and
reference. Prints a table and writes ``evidence.json``, ``evidence.md`` and ``evidence.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def kdiff_sampling():
    """k-diffusion's sampling.py (test-only reference; loaded without its heavy package __init__)."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests._kdiff_ref import load_kdiff_sampling

        return load_kdiff_sampling()
    except ImportError as e:
        print(f"k-diffusion peers skipped: {e}")
        return None


def tiny_diffusers(root: Path) -> str:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    unet.save_pretrained(root / "unet")
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "prediction_type": "epsilon", "beta_start": 1e-4, "beta_end": 0.02,
         "beta_schedule": "linear", "num_train_timesteps": 1000}))
    return f"diffusers:{root / 'unet'}"


def kdiff_peers(kd, model, res, held) -> list[dict]:
    """k-diffusion sample_lms / sample_dpmpp_2m at the same NFE (N steps = N NFE) on the standard grids."""
    from erkguid.metrics import global_error
    from erkguid.tune import FAMILIES, STANDARD_GRIDS, CountingDenoiser

    nfe = res["nfe"]
    rows = []
    for fn in ("sample_lms", "sample_dpmpp_2m"):
        for g in STANDARD_GRIDS:
            sig = FAMILIES[g](nfe, model.sigma_min, model.sigma_max).to(torch.float64)
            sig[0] = model.sigma_max
            den = CountingDenoiser(model.denoiser)
            with torch.no_grad():
                x = getattr(kd, fn)(den, held.x0.clone(), sig, extra_args=held.extra, disable=True)
            e = global_error(x, held.ref)
            rows.append({"label": f"k-diffusion {fn} [{g}]", "grid": g, "nfe": den.calls, "err_mean": float(e.mean()), "_err": e})
    return rows


def replay(evidence: dict, models: list[str]) -> None:
    """Re-measure recorded held-out errors with the current code: the winner (from its stored preset and grid) and every
    erkguid plain peer; prints the relative change of the winner (0: bit for bit) and every peer that moved."""
    from erkguid.resolve import resolve_model
    from erkguid.tune import HELDOUT_SEED, STANDARD_GRIDS, Candidate, Evaluator, _plain_candidates, options_from_json

    torch.set_num_threads(1)
    for spec in models:
        rows = [r for r in evidence["rows"] if r["model"] == spec]
        if not rows:
            print(f"{spec}: no rows")
            continue
        m = resolve_model(spec)
        held = Evaluator(m, range(HELDOUT_SEED, HELDOUT_SEED + rows[0]["heldout"]), rtol=rows[0]["reference_rtol"])
        for r in rows:
            p = r["preset"]
            win = Candidate(p["solver"], options_from_json(p["solver_options"]), r["sigmas"], p["w_stiff"], p["w_con"],
                            p["scaling"], trust=p.get("trust"))
            err = float(held.errors(win)[0].mean())
            recorded = {q["label"]: q["err_mean"] for q in r["peers"]}
            now = dict(recorded)  # k-diffusion peers keep their recorded errors
            moved = []
            for c in _plain_candidates(m, r["nfe"], None, [], grids=STANDARD_GRIDS):
                if c.label in recorded:
                    now[c.label] = e = float(held.errors(c)[0].mean())
                    if e != recorded[c.label]:
                        moved.append(f"{c.label} {recorded[c.label]:.4g} -> {e:.4g} ({e / recorded[c.label] - 1:+.1e})")
            best = min(now, key=lambda k: now[k])
            change = "" if best == r["best_peer"] else f"; best peer now {best} {now[best]:.4g}: ratio {err / now[best]:.3f}"
            print(f"{spec} NFE {r['nfe']}: winner {r['tuned']}: {r['tuned_err']:.6g} -> {err:.6g} "
                  f"(relative {err / r['tuned_err'] - 1:+.1e}); peers moved: {'; '.join(moved) or 'none'}{change}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "tune")
    ap.add_argument("--nfes", default="5,7,11,15")
    ap.add_argument("--models", default="learned:tree2d-main,learned:tree2d-weak,learned:digits-main,learned:digits-weak,"
                                        "tree2d,digits64,gauss,diffusers")
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--budget-minutes", type=float, default=0.25)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--name", default="evidence", help="Output name (NAME.json/.md/.png).")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="Merge these result JSONs into --out/--name instead.")
    ap.add_argument("--replay", type=Path, default=None,
                    help="Instead: replay the winners and erkguid peers of this evidence JSON (rows of --models) with the "
                         "current code on the same held-out seeds, and print how far each error moved.")
    args = ap.parse_args()
    if args.replay:
        replay(json.loads(args.replay.read_text()), args.models.split(","))
        return
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        write(args.out, {"commands": [p["command"] for p in parts], "rows": [r for p in parts for r in p["rows"]],
                         "total_seconds": [p["total_seconds"] for p in parts], "torch": torch.__version__}, args.name)
        return
    torch.set_num_threads(1)
    from erkguid.metrics import ratio_ci
    from erkguid.resolve import resolve_model
    from erkguid.tune import TuneConfig, tune

    kd = kdiff_sampling()
    tmp = Path(tempfile.mkdtemp(prefix="erkguid-tune-evidence-"))
    nfes = [int(v) for v in args.nfes.split(",")]
    rows = []
    t_all = time.perf_counter()
    for spec in args.models.split(","):
        spec = tiny_diffusers(tmp / "pipe") if spec == "diffusers" else spec
        model = resolve_model(spec)
        cache: dict = {}
        # the random UNet is ~100x slower per evaluation than the MLPs: fewer samples, looser reference
        small = spec.startswith("diffusers:")
        calib, heldout, rtol = (min(args.calib, 32), min(args.heldout, 64), max(args.rtol, 1e-5)) if small else \
            (args.calib, args.heldout, args.rtol)
        for nfe in nfes:
            cfg = TuneConfig(nfe=nfe, calib=calib, heldout=heldout, budget_minutes=args.budget_minutes, rtol=rtol)
            t0 = time.perf_counter()
            res = tune(model, nfe, cfg, progress=False, evaluators=cache)
            wall = time.perf_counter() - t0
            h = res["heldout"]
            peers = list(h["peers"])
            if kd is not None:
                # the same held-out seeds and reference (tune's own evaluator): recompute the tuned errors to pair them
                from erkguid.tune import Candidate, options_from_json

                held = cache[(model.name, *h["seeds"], rtol)]
                kp = kdiff_peers(kd, model, res, held)
                win = Candidate(res["solver"], options_from_json(res["solver_options"]), res["sigmas"], res["w_stiff"],
                                res["w_con"], res["scaling"], trust=res.get("trust"))
                err_win, _ = held.errors(win)
                assert float(err_win.mean()) == h["err_mean"]
                best = min(peers, key=lambda p: p["err_mean"])
                kbest = min(kp, key=lambda p: p["err_mean"])
                if kbest["err_mean"] < best["err_mean"]:
                    ratio, lo, hi = ratio_ci(err_win, kbest["_err"])
                    h.update(best_peer=kbest["label"], best_peer_err_mean=kbest["err_mean"], ratio_vs_best_peer=ratio,
                             ratio_ci95=[lo, hi])
                peers += [{k: v for k, v in p.items() if k != "_err"} for p in kp]
            row = {"model": spec if not spec.startswith("diffusers:") else "diffusers:(tiny random UNet2DModel, DDPM eps)",
                   "nfe": nfe, "tuned": res["chosen"]["label"], "tuned_err": h["err_mean"], "best_peer": h["best_peer"],
                   "best_peer_err": h["best_peer_err_mean"], "ratio": h["ratio_vs_best_peer"], "ratio_ci95": h["ratio_ci95"],
                   "tune_wall_s": wall, "candidates": res["chosen"]["candidates_scored"], "notes": res["chosen"]["notes"],
                   "peers": sorted(peers, key=lambda p: p["err_mean"]), "sigmas": res["sigmas"], "calib": calib,
                   "heldout": heldout, "reference_rtol": rtol, "preset": {k: res[k] for k in ("solver", "solver_options",
                                                                                             "w_stiff", "w_con", "scaling",
                                                                                             "trust") if k in res}}
            rows.append(row)
            lo, hi = row["ratio_ci95"]
            print(f"{row['model']:28s} NFE {nfe:2d}: tuned {row['tuned_err']:.4g} ({row['tuned']}) vs {row['best_peer']} "
                  f"{row['best_peer_err']:.4g}: ratio {row['ratio']:.3f} [{lo:.3f}, {hi:.3f}]; tune {wall:.0f} s", flush=True)
    result = {"command": "OMP_NUM_THREADS=1 python scripts/tune_evidence.py " + " ".join(sys.argv[1:]),
              "config": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "total_seconds": time.perf_counter() - t_all,
              "torch": torch.__version__}
    write(args.out, result, args.name)


def table(result: dict) -> str:
    lines = ["| model | NFE | tuned sampler | tuned err | best plain peer | peer err | ratio [95% CI] | tune s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lo, hi = r["ratio_ci95"]
        flag = "" if r["ratio"] <= 0.5 else " (> 0.5)"
        lines.append(f"| {r['model']} | {r['nfe']} | {r['tuned']} | {r['tuned_err']:.4g} | {r['best_peer']} | "
                     f"{r['best_peer_err']:.4g} | {r['ratio']:.3f} [{lo:.3f}, {hi:.3f}]{flag} | {r['tune_wall_s']:.0f} |")
    return "\n".join(lines)


def write(out: Path, result: dict, name: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from erkguid.experiments._output import pyplot, write_results

    def plot(path: Path) -> None:
        plt = pyplot()
        models = list(dict.fromkeys(r["model"] for r in result["rows"]))
        fig, axes = plt.subplots(2, (len(models) + 1) // 2, figsize=(4 * ((len(models) + 1) // 2), 7), squeeze=False)
        for ax, mname in zip(axes.flat, models):
            rows = [r for r in result["rows"] if r["model"] == mname]
            curves: dict[str, list] = {}
            for r in rows:
                for p in r["peers"]:
                    curves.setdefault(p["label"], []).append((r["nfe"], p["err_mean"]))
            for pts in curves.values():
                ax.plot(*zip(*sorted(pts)), lw=0.7, alpha=0.5)
            ax.plot([r["nfe"] for r in rows], [r["best_peer_err"] for r in rows], "b^--", label="best plain peer")
            ax.plot([r["nfe"] for r in rows], [r["tuned_err"] for r in rows], "k*-", ms=9, label="erkguid tune")
            ax.set(title=mname[:40], xlabel="NFE", ylabel="held-out mean global error", yscale="log")
            ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    md = table(result)
    print(md)
    for f in write_results(out, name, result, markdown=md, plot=plot):
        print(f"wrote {f}")


if __name__ == "__main__":
    main()
