"""``erkguid reproduce NAME``: the paper's analysis figures (Fig. 1-3, 6a, 7, Table 1) on exact models."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.argument("name", type=click.Choice(["fig1", "table1", "fig2", "fig3", "fig6a", "fig7", "all"]))
@click.option("--quick", is_flag=True, help="Tiny sizes (seconds); the numbers are not the reported ones.")
@click.option("--model", type=click.Choice(["tree2d", "digits64", "gauss"]), default=None,
              help="Model for fig2/fig3/fig7 (default: tree2d and digits64; fig7: digits64).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/reproduce"), show_default=True,
              help="Directory for NAME.json, NAME.md and NAME.png.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def reproduce(name: str, quick: bool, model: str | None, out: Path, quiet: bool) -> None:
    """Reproduce a figure/table of the paper: prints the paper's number beside ours, writes PNG + JSON + markdown."""
    from ..experiments.reproduce import reproduce as run

    for res in run(name, out, quick=quick, progress=not quiet, model=model):
        click.echo(f"## {res['name']}  ({res['command']})")
        for c in res["claims"]:
            click.echo(f"- {c['figure']}: {c['claim']}\n    paper: {c['paper']}\n    ours:  {c['ours']}")
            click.echo(f"    reproduces: {c['verdict']}" + (f" ({c['note']})" if c.get("note") else ""))
        for f in res["files"]:
            click.echo(f"wrote {f}")
