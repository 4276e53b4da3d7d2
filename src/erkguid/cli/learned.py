"""Learned-model commands: ``train`` and ``tune`` (the paper suite is ``erkguid bench --suite paper``; sampling with a
tuned preset is ``erkguid sample --preset``)."""

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


@main.command()
@click.argument("target")
@click.option("--solver", default="heun", show_default=True)
@click.option("--nfe", type=click.IntRange(min=2), default=15, show_default=True,
              help="NFE budget (largest step count within it).")
@click.option("--objective", type=click.Choice(["error", "fd"]), default="error", show_default=True,
              help="error: mean global error vs reference solve; fd: Frechet distance to reference data.")
@click.option("--calib", type=click.IntRange(min=16), default=256, show_default=True, help="Calibration batch size.")
@click.option("--heldout", type=click.IntRange(min=16), default=512, show_default=True, help="Held-out batch size.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Preset file (default runs/tune/TARGET-SOLVER-nfeN.json).")
@click.option("--quiet", is_flag=True)
def tune(target: str, solver: str, nfe: int, objective: str, calib: int, heldout: int, out: Path | None, quiet: bool) -> None:
    """Choose (w_stiff, w_con) for TARGET (e.g. digits-learned) on a calibration batch; report the held-out gain."""
    from ..experiments.paper import TARGETS
    from ..experiments.tune import save_preset
    from ..experiments.tune import tune as run_tune

    if target not in TARGETS:
        raise click.BadParameter(f"choose from {', '.join(TARGETS)}", param_hint="TARGET")
    from ..experiments.bench import max_steps
    from ..solvers import SOLVERS

    if solver not in SOLVERS:
        raise click.BadParameter(f"unknown solver {solver!r}; choose from {', '.join(sorted(SOLVERS))}", param_hint="--solver")
    steps = max_steps(solver, nfe)
    if steps is None or steps < 2:
        raise click.BadParameter(f"NFE {nfe} is too small for solver {solver!r} (it needs room for at least 2 steps)",
                                 param_hint="--nfe")
    try:
        p = run_tune(target, solver, nfe, objective=objective, calib=calib, heldout=heldout, progress=not quiet)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    path = save_preset(p, out or Path("runs/tune") / f"{target}-{solver}-nfe{nfe}.json")
    h = p["heldout"]
    click.echo(f"{target} {solver} {p['steps']} steps (NFE {p['nfe']}), objective {objective}: "
               f"chose w_stiff={p['w_stiff']:g}, w_con={p['w_con']:g} "
               f"(calibration {p['calibration']['baseline']:.4g} -> {p['calibration']['best']:.4g})")
    lo, hi = h["err_ratio_ci"]
    click.echo(f"held-out ({heldout} seeds): error ratio {h['err_ratio']:.3f} [{lo:.3f}, {hi:.3f}], "
               f"dFD {h['fd_delta']:+.4g} [{h['fd_delta_ci'][0]:+.3g}, {h['fd_delta_ci'][1]:+.3g}]")
    click.echo(f"wrote {path}")
