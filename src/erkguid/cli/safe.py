"""``erkguid safe-erk``: the evidence behind ``erkguid.recommended`` (every solver x setting x problem x NFE)."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command("safe-erk")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/safe"), show_default=True,
              help="Directory for safe_erk.json and safe_erk.md.")
@click.option("--problems", default=None, help="Comma-separated subset (default: all seven).")
@click.option("--num-samples", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def safe_erk(out: Path, problems: str | None, num_samples: int, quiet: bool) -> None:
    """Which ERK-Guid setting is never worse than the plain solver (about 25 min on 2 cores for the full run)."""
    import torch

    from ..experiments._output import write_results
    from ..experiments.safe import format_markdown, run_safe, select_recommended

    names = None if problems is None else [p.strip() for p in problems.split(",") if p.strip()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_safe(names, num_samples=num_samples, progress=not quiet)
    finally:
        torch.set_num_threads(threads)
    md = format_markdown(res)
    files = write_results(out, "safe_erk", res, md)
    click.echo(md.split("\n## The recommended")[0])
    click.echo(f"chosen: {select_recommended(res['rows'])}")
    click.echo("wrote " + ", ".join(files))
