"""``erkguid guidance``: CFG / autoguidance alone vs + ERK-Guid vs + ERK-Proj on exact class-conditional mixtures."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/guidance"), show_default=True,
              help="Directory for guidance.json, guidance.md and guidance.png.")
@click.option("--model", "model_name", type=click.Choice(["tree2d", "digits64"]), default="tree2d", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=16), default=1024, show_default=True)
@click.option("--steps", type=click.IntRange(min=2), multiple=True, default=(8, 16), show_default=True,
              help="Heun step counts (repeat the option).")
@click.option("--w-cfg", type=float, default=2.0, show_default=True, help="CFG weight w (D_unc + w (D_cond - D_unc)).")
@click.option("--w-ag", type=float, default=2.0, show_default=True, help="Autoguidance weight w.")
@click.option("--broaden", type=click.FloatRange(min=1.0), default=2.0, show_default=True,
              help="AG weak model: covariances scaled by this factor.")
@click.option("--w-stiff", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--w-con", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--w-proj", type=click.FloatRange(min=0), default=None, help="ERK-Proj strength (default: --w-stiff, Eq. 59).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def guidance(out: Path, model_name: str, num_samples: int, steps: tuple[int, ...], w_cfg: float, w_ag: float, broaden: float,
             w_stiff: float, w_con: float, w_proj: float | None, seed: int, quiet: bool) -> None:
    """CFG and AG alone vs + ERK-Guid vs + ERK-Proj (App. B.4): error vs the exact guided ODE, distance to p(x|c), NLL, NFE."""
    from ..experiments.guidance import format_table, run_guidance

    res = run_guidance(out, model_name=model_name, num_samples=num_samples, steps=tuple(sorted(steps)), w_cfg=w_cfg,
                       w_ag=w_ag, broaden=broaden, w_stiff=w_stiff, w_con=w_con, w_proj=w_proj, seed=seed,
                       progress=not quiet)
    s = res["settings"]
    gaps = ", ".join(f"{k} {v['max_gap_vs_100x_looser']:.1e}" for k, v in res["reference"].items())
    click.echo(f"{res['model']}, {num_samples} samples (classes alternate), Heun, w_stiff={s['w_stiff']:g}, "
               f"w_con={s['w_con']:g}, w_proj={s['w_proj']:g}; target: {res['target']}; reference gap vs 100x tighter: {gaps}")
    click.echo(format_table(res))
    for f in res.get("files", []):
        click.echo(f"wrote {f}")
