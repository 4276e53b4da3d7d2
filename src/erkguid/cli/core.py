"""Core commands: ``demo`` and ``solvers``."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Directory for demo.json, demo.md and demo.png.")
@click.option("--model", type=click.Choice(["tree2d", "patches16", "patches32"]), default="tree2d", show_default=True,
              help="tree2d: scatter plots; patches16 / patches32: exact-score mixtures of photograph patches, shown as images.")
@click.option("--num-samples", type=click.IntRange(min=16), default=None, help="[2048 for tree2d, 128 for the patch models]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch intra-op threads while the demo runs (its tensors are small: more threads mostly add overhead).")
def demo(out: Path, model: str, num_samples: int | None, seed: int, quiet: bool, threads: int) -> None:
    """Heun vs ERK-Guid on an exact-score model (default the 2-D tree): accuracy and distribution metrics per NFE."""
    import time

    import torch

    from ..experiments.demo import format_table, run_demo
    from ..models import get_model

    num_samples = num_samples or (2048 if model == "tree2d" else 128)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        res = run_demo(out, model=get_model(model), num_samples=num_samples, seed=seed, progress=not quiet)
    finally:
        torch.set_num_threads(before)
    seconds = time.perf_counter() - t0
    click.echo(f"{model}, {num_samples} samples, same initial noise for every method; "
               f"reference ODE solve max gap vs 100x looser tolerance: {res['reference']['max_gap_vs_100x_looser']:.2e}")
    click.echo(format_table(res["rows"]))
    click.echo(f"sliced W2 between two independent sets of true samples (noise floor): {res['truth_vs_truth_sliced_w2']:.4f}")
    click.echo(f"{seconds:.0f} s with {threads} torch thread{'s' if threads > 1 else ''} "
               f"(reference solves {res['reference']['seconds']:.0f} s)")
    for f in res.get("files", []):
        click.echo(f"wrote {f}")


@main.command()
def solvers() -> None:
    """List the registered solvers with their order and cost."""
    from ..solvers import SOLVERS

    for s in SOLVERS.values():
        opts = ", ".join(f"{k}={v!r}" for k, v in (s.options or {}).items()) or "-"
        click.echo(f"{s.name:12s} order {s.order}  NFE(N=8)={s.nfe(8):3d}  options: {opts}  {s.doc}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/overhead"), show_default=True)
@click.option("--repeats", type=click.IntRange(min=3), default=15, show_default=True)
@click.option("--rounds", type=click.IntRange(min=3), default=15, show_default=True,
              help="Interleaved rounds of the sampler-cost timings (medians).")
@click.option("--sampler-only", is_flag=True, help="Only the sampler cost against k-diffusion (skip the two model cases).")
def overhead(out: Path, repeats: int, rounds: int, sampler_only: bool) -> None:
    """Cost of ERK-Guid relative to one denoiser evaluation, and the sampler's own cost against k-diffusion."""
    from ..experiments.overhead import format_overhead, run_overhead

    res = run_overhead(out, repeats, rounds=rounds, sampler_only=sampler_only)
    click.echo(format_overhead(res))
    click.echo(f"wrote {out / 'overhead.json'}")

