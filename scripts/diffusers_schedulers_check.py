"""Every ERK diffusers scheduler in a stock StableDiffusionPipeline with tiny random components (built offline).

Per scheduler: max |difference| to the stock scheduler at w_stiff = 0 (with classifier-free guidance), max |difference|
to ``erkguid.sample`` with the matching solver and the VP adapter at w_stiff > 0 (no CFG), a save/reload round trip
through ``DiffusionPipeline.from_pretrained`` and the pipeline's wall time (median of --repeats) against the stock
scheduler. The flow-matching scheduler runs the SD3/Flux loop with a tiny velocity net (no tiny SD3 pipeline is built).

Usage: PYTHONPATH=src OMP_NUM_THREADS=1 python scripts/diffusers_schedulers_check.py [--steps 20] [--repeats 5]
Writes runs/diffusers_schedulers/diffusers_schedulers.{json,md}.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests._helpers: the tiny pipeline builder

import erkguid  # noqa: E402
from erkguid.denoisers import DiscreteVPSchedule, VPDenoiser  # noqa: E402
from erkguid.experiments._output import write_results  # noqa: E402
from erkguid.integrations import diffusers as erk  # noqa: E402

SCHEDULERS = [  # (stock class name, ERK class name, erkguid solver with the same update); names: importing the
    ("HeunDiscreteScheduler", "ERKHeunDiscreteScheduler", "heun"),  # module (format_table) does not import diffusers
    ("KDPM2DiscreteScheduler", "ERKKDPM2DiscreteScheduler", "dpm2"),
    ("DPMSolverMultistepScheduler", "ERKDPMSolverMultistepScheduler", "dpmpp_2m"),
    ("UniPCMultistepScheduler", "ERKUniPCMultistepScheduler", "unipc"),
    ("DEISMultistepScheduler", "ERKDEISMultistepScheduler", "deis"),  # mode "logrho": erk_solver_options()
]


def _timed(pipe, run: dict, repeats: int) -> tuple[torch.Tensor, float, float]:
    """(output, median pipeline wall time, median time inside scheduler.step) over ``repeats`` runs."""
    times, steps, out = [], [], None
    stock_step = pipe.scheduler.step
    acc = {"t": 0.0}

    @functools.wraps(stock_step)  # keeps the signature the pipeline inspects
    def step(*a, **k):
        t0 = time.perf_counter()
        try:
            return stock_step(*a, **k)
        finally:
            acc["t"] += time.perf_counter() - t0

    pipe.scheduler.step = step
    for _ in range(repeats):
        acc["t"] = 0.0
        t0 = time.perf_counter()
        out = pipe(**run, generator=torch.Generator().manual_seed(0)).images
        times.append(time.perf_counter() - t0)
        steps.append(acc["t"])
    del pipe.scheduler.step
    return out, statistics.median(times), statistics.median(steps)


@torch.no_grad()
def check(steps: int, repeats: int, w_stiff: float, tmp: Path) -> dict:
    import diffusers

    from tests._helpers import tiny_sd_pipeline
    from tests.test_diffusers_schedulers import VEL, flow_loop

    base_cfg = diffusers.DPMSolverMultistepScheduler(steps_offset=1).config
    pipe = tiny_sd_pipeline(diffusers.DPMSolverMultistepScheduler.from_config(base_cfg), tmp / "tok")
    run = {"prompt": "a cat", "num_inference_steps": steps, "height": 8, "width": 8, "output_type": "latent"}
    emb = pipe.encode_prompt("a cat", "cpu", 1, False)[0]
    latents = erkguid.randn_from_seeds([0], (4, 8, 8))
    rows = []
    for stock_name, erk_name, solver in SCHEDULERS:
        cls = getattr(erk, erk_name)
        pipe.scheduler = getattr(diffusers, stock_name).from_config(base_cfg)
        want, t_stock, st_stock = _timed(pipe, run, repeats)
        pipe.scheduler = cls.from_config(base_cfg, w_stiff=0.0)  # explicit: the default is erkguid.recommended
        got, t_erk0, _ = _timed(pipe, run, repeats)
        pipe.scheduler = cls.from_config(base_cfg, w_stiff=w_stiff, w_con=0.0)
        _, t_erk, st_erk = _timed(pipe, run, repeats)
        row = {"scheduler": cls.__name__, "strength0_max_diff": float((got - want).abs().max()),
               "wall_stock_s": t_stock, "wall_erk0_s": t_erk0, "wall_erk_s": t_erk, "ratio_erk_vs_stock": t_erk / t_stock,
               "step_time_stock_s": st_stock, "step_time_erk_s": st_erk}
        if solver is not None:  # w_stiff > 0 without CFG vs erkguid.sample over the scheduler's own grid
            erk_out = pipe(**run, guidance_scale=1.0, latents=latents.clone()).images
            s = pipe.scheduler
            grid = torch.unique_consecutive(s.sigmas.double())  # DEIS's ends at sigma_last > 0, the others' at 0
            s0, s_end = float(grid[0]), float(grid[-1])
            x0 = latents * (s0 if s.order == 2 else (1 + s0 * s0) ** 0.5)
            den = VPDenoiser(lambda xv, t: pipe.unet(xv, t, encoder_hidden_states=emb).sample,
                             DiscreteVPSchedule(s.alphas_cumprod))
            opts, to_vp = s.erk_solver_options(), (1.0 if s.order == 2 else (1 + s_end * s_end) ** -0.5)
            ref = erkguid.sample(den, x0, grid, solver=solver, solver_options=opts, w_stiff=w_stiff, w_con=0.0) * to_vp
            plain = erkguid.sample(den, x0, grid, solver=solver, solver_options=opts) * to_vp
            row["vs_erkguid_sample_max_diff"] = float((erk_out - ref).abs().max())
            row["erk_effect_max"] = float((ref - plain).abs().max())
        pipe.save_pretrained(tmp / cls.__name__)
        back = diffusers.DiffusionPipeline.from_pretrained(tmp / cls.__name__)
        row["reload_ok"] = type(back.scheduler) is cls and back.scheduler.config.w_stiff == w_stiff
        rows.append(row)
    noise = erkguid.randn_from_seeds(range(2), (4, 8, 8))  # flow matching: the SD3/Flux loop, tiny velocity net
    stock = diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0)
    t0 = time.perf_counter()
    want = flow_loop(stock, noise, steps)
    t_stock = time.perf_counter() - t0
    got = flow_loop(erk.ERKFlowMatchHeunDiscreteScheduler.from_config(stock.config, w_stiff=0.0), noise, steps)
    e = erk.ERKFlowMatchHeunDiscreteScheduler(shift=3.0, w_stiff=w_stiff, w_con=0.0)
    t0 = time.perf_counter()
    out = flow_loop(e, noise, steps)
    t_erk = time.perf_counter() - t0
    grid = torch.unique_consecutive(e.sigmas.double())
    def flow_den(x, t):  # the flow's own variables: (x - D) / t = v
        return x - t.reshape(-1, 1, 1, 1).to(x.dtype) * VEL(x, t * 1000)

    ref = erkguid.sample(flow_den, noise, grid, solver="heun", w_stiff=w_stiff, w_con=0.0)
    plain = erkguid.sample(flow_den, noise, grid, solver="heun")
    e.save_pretrained(tmp / "flow")
    back = erk.ERKFlowMatchHeunDiscreteScheduler.from_pretrained(tmp / "flow")
    rows.append({"scheduler": "ERKFlowMatchHeunDiscreteScheduler (hand-written SD3 loop)",
                 "strength0_max_diff": float((got - want).abs().max()),
                 "vs_erkguid_sample_max_diff": float((out - ref).abs().max()), "erk_effect_max": float((ref - plain).abs().max()),
                 "wall_stock_s": t_stock, "wall_erk_s": t_erk, "ratio_erk_vs_stock": t_erk / t_stock,
                 "reload_ok": back.config.w_stiff == w_stiff and back.config.shift == 3.0})
    return {"steps": steps, "repeats": repeats, "w_stiff": w_stiff, "torch": torch.__version__, "loadavg": os.getloadavg(),
            "diffusers": diffusers.__version__, "threads": torch.get_num_threads(), "rows": rows}


def format_table(res: dict) -> str:
    """The printed table (docs/ecosystem.md's diffusers block): one row per scheduler from ``check``'s result."""
    lines = [f"steps {res['steps']}, median of {res['repeats']} runs (flow loop: 1 run), w_stiff {res['w_stiff']}, 1 thread, "
             f"load average {res['loadavg'][0]:.1f}", "",
             "| scheduler | w=0 vs stock (max abs) | w>0 vs erkguid.sample (max abs) | ERK effect (max abs) | reload | "
             "stock s | ERK s | ERK/stock | in step(): stock s | ERK s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        vs, eff = r.get("vs_erkguid_sample_max_diff"), r.get("erk_effect_max")
        lines.append(f"| {r['scheduler']} | {r['strength0_max_diff']:.3g} | {'n/a' if vs is None else f'{vs:.3g}'} | "
                     f"{'n/a' if eff is None else f'{eff:.3g}'} | {'ok' if r['reload_ok'] else 'FAILED'} | "
                     f"{r['wall_stock_s']:.4f} | {r['wall_erk_s']:.4f} | {r['ratio_erk_vs_stock']:.3f} | "
                     f"{r.get('step_time_stock_s', float('nan')):.4f} | {r.get('step_time_erk_s', float('nan')):.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--w-stiff", type=float, default=1.0)
    ap.add_argument("--out", default="runs/diffusers_schedulers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        res = check(args.steps, args.repeats, args.w_stiff, Path(tmp))
    md = format_table(res)
    print(md)
    for f in write_results(args.out, "diffusers_schedulers", res, md):
        print("wrote", f)


if __name__ == "__main__":
    main()
