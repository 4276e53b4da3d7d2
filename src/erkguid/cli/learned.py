"""Learned-model command ``train`` (the paper suite is ``erkguid bench --suite paper``; ``erkguid tune`` lives in
:mod:`erkguid.cli.tune`)."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Train every preset.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/train"), show_default=True,
              help="Checkpoints go to OUT/NAME/checkpoint.safetensors (atomic; resumed on rerun).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the preset's number of steps.")
@click.option("--no-resume", is_flag=True, help="Start from scratch even if a checkpoint exists.")
@click.option("--ship", "ship_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write NAME.safetensors + manifest entry here (the package's data/models to update the shipped models).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(names: tuple[str, ...], all_: bool, out: Path, steps: int | None, no_resume: bool, ship_dir: Path | None,
          quiet: bool) -> None:
    """Train presets (tree2d-main, tree2d-weak, digits-main, digits-weak, digits-classifier)."""
    from ..training.edm import PRESETS, ship
    from ..training.edm import train as run_train

    chosen = sorted(PRESETS) if all_ else list(names)
    if not chosen:
        raise click.UsageError(f"give preset NAMES or --all; presets: {', '.join(sorted(PRESETS))}")
    for n in chosen:
        if n not in PRESETS:
            raise click.BadParameter(f"unknown preset {n!r}; choose from {', '.join(sorted(PRESETS))}", param_hint="NAMES")
    for n in chosen:
        try:
            res = run_train(n, out / n, steps=steps, resume=not no_resume, progress=not quiet)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
        msg = f"{n}: {res.steps} steps, final loss {res.final_loss:.4f}"
        if "test_accuracy" in res.extra:
            msg += f", test accuracy {res.extra['test_accuracy']:.3f}"
        click.echo(msg)
        if ship_dir is not None:
            entry = ship(res, ship_dir)
            stats = entry.get("sample_stats")
            click.echo(f"  shipped to {ship_dir}/{n}.safetensors ({entry['params']} params)"
                       + (f"; sample mean {stats['mean']:.4f} std {stats['std']:.4f}" if stats else ""))
