"""``erkguid profile``: per-step rho-hat, gate fractions and correction size for any model spec."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--model", default="tree2d", show_default=True,
              help="Any model spec (tree2d, digits64, patches16, patches32, learned:NAME, gmm:FILE, diffusers:DIR, "
                   "edm:PKL::SRC, entry-point schemes).")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickled models (edm:, .pt checkpoints); trusted files only.")
@click.option("--solver", default="heun", show_default=True, help="Any registered solver (see `erkguid solvers`).")
@click.option("--steps", type=click.IntRange(min=2), default=16, show_default=True)
@click.option("--schedule", type=click.Choice(["edm", "logsnr", "time_uniform"]), default="edm", show_default=True)
@click.option("--sigma-max", type=click.FloatRange(min=0, min_open=True), default=None, help="Default: the model's.")
@click.option("--num-samples", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--w-stiff", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--w-con", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Gate of the run itself (0: correction everywhere, to see its size).")
@click.option("--candidates", default="0.05,0.5,1,2,5,10,20", show_default=True,
              help="Comma-separated w_con values whose gated fraction is reported.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/profile"), show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def profile(model: str, solver: str, steps: int, schedule: str, sigma_max: float | None, num_samples: int, w_stiff: float,
            w_con: float, candidates: str, seed: int, out: Path, quiet: bool, allow_pickle: bool) -> None:
    """One sampling pass: per-step rho-hat distribution, fraction gated per candidate w_con, correction / step."""
    import torch

    from ..experiments.profile import profile_run, save_profile
    from ..noise import randn_from_seeds
    from ..schedules import get_sigmas

    try:
        cands = [float(c) for c in candidates.split(",") if c.strip()]
    except ValueError as e:
        raise click.BadParameter(f"must be comma-separated numbers, got {candidates!r}", param_hint="--candidates") from e
    from ..resolve import resolve_model

    try:
        m = resolve_model(model, allow_pickle=allow_pickle)
    except (ValueError, OSError, ImportError) as e:
        raise click.BadParameter(str(e), param_hint="--model") from None
    sigma_max = m.sigma_max if sigma_max is None else sigma_max
    seeds = list(range(seed, seed + num_samples))
    x = randn_from_seeds(seeds, m.shape, sigma=sigma_max, dtype=torch.float64)
    sigmas = get_sigmas(schedule, steps, sigma_min=min(m.sigma_min, sigma_max / 2), sigma_max=sigma_max)
    try:
        res = profile_run(m.denoiser, x, sigmas, solver=solver, w_stiff=w_stiff, w_con=w_con, candidates=cands, seeds=seeds,
                          progress=not quiet)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    click.echo(f"{model}, {solver}, {steps} steps ({schedule}), {num_samples} samples, w_stiff={w_stiff:g}, w_con={w_con:g}")
    from ..experiments.profile import format_summary

    click.echo(format_summary(res))
    for f in save_profile(res, out, f"{model} / {solver} / {steps} steps / w_stiff={w_stiff:g}"):
        click.echo(f"wrote {f}")
