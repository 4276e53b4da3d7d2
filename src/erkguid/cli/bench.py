"""``erkguid bench``: the solver x ERK-Guid grid on the exact-score problems."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--quick", "preset", flag_value="quick", default=True,
              help="3 problems, 7 solvers, NFE 7 and 15, plain + default ERK (default).")
@click.option("--full", "preset", flag_value="full",
              help="tree2d + digits64, NFE 7/11/15/23, a w_stiff x w_con grid, baselines.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory [runs/bench-<preset>].")
@click.option("--num-samples", type=click.IntRange(min=16), default=None, help="Override the preset's sample count.")
@click.option("--solvers", default=None, help="Comma-separated solver names (override).")
@click.option("--problems", default=None, help="Comma-separated problems: tree2d, digits64, gauss (override).")
@click.option("--nfe", default=None, help="Comma-separated NFE targets (override).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(preset, out, num_samples, solvers, problems, nfe, seed, quiet) -> None:
    """Problems x solvers x NFE x ERK-Guid settings with common random numbers; JSON, markdown, PNGs."""
    from dataclasses import replace

    from ..experiments.bench import FULL, QUICK, format_tables, run_bench, summarize

    cfg = FULL if preset == "full" else QUICK
    cfg = replace(cfg, seed=seed)
    if num_samples:
        cfg = replace(cfg, num_samples=num_samples)
    if solvers:
        cfg = replace(cfg, solvers=tuple(s.strip() for s in solvers.split(",")))
    if problems:
        cfg = replace(cfg, problems=tuple(s.strip() for s in problems.split(",")))
    if nfe:
        cfg = replace(cfg, nfe_targets=tuple(int(s) for s in nfe.split(",")))
    res = run_bench(cfg, out or Path(f"runs/bench-{preset}"), progress=not quiet)
    click.echo(format_tables(res["rows"]))
    click.echo(summarize(res["rows"]))
    click.echo(f"total {res['seconds']:.1f} s")
    for f in res.get("files", []):
        click.echo(f"wrote {f}")
