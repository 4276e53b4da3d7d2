"""``erkguid generate``: one file per seed, resumable, sharded over torchrun ranks."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import main


@main.command()
@click.option("--model", "model_spec", required=True,
              help="Built-in name (tree2d, digits64, digits64-image, gauss) or SCHEME:ARG: gmm:PATH.npz, learned:NAME "
                   "(shipped models), diffusers:DIR (save_pretrained dir), edm:PICKLE::SOURCE_DIR, or a registered scheme.")
@click.option("--seeds", required=True, help="Seeds, e.g. 0-49999 or 0,5,10-19 (inclusive); one output file per seed.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--solver", default="heun", show_default=True, help="Registered solver (erkguid solvers).")
@click.option("--steps", type=int, default=18, show_default=True, help="Number of sampling steps.")
@click.option("--schedule", default="edm", show_default=True, help="Sigma grid: edm, logsnr, time_uniform.")
@click.option("--sigma-min", type=float, default=None, help="Default: the model's.")
@click.option("--sigma-max", type=float, default=None, help="Default: the model's.")
@click.option("--w-stiff", type=float, default=0.0, show_default=True, help="ERK-Guid strength (Eq. 19); 0 = plain solver.")
@click.option("--w-con", type=float, default=0.0, show_default=True, help="Stiffness threshold of the gate.")
@click.option("--scaling", default="z2", show_default=True, help="z2, abs or alpha (App. B.3).")
@click.option("--class", "class_label", type=int, default=None, help="Fixed class label (default: drawn from each seed).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--batch", "batch_size", type=int, default=64, show_default=True,
              help="Samples per batch (fixed chunks of the seed list).")
@click.option("--format", "fmt", type=click.Choice(["auto", "png", "npz"]), default="auto", show_default=True,
              help="auto: PNG for image-shaped states (C,H,W), else .npz.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--sleep-per-batch", type=float, default=0.0, hidden=True)
def generate(model_spec: str, seeds: str, out: Path, solver: str, steps: int, schedule: str, sigma_min: float | None,
             sigma_max: float | None, w_stiff: float, w_con: float, scaling: str, class_label: int | None, dtype: str,
             batch_size: int, fmt: str, device: str | None, quiet: bool, sleep_per_batch: float) -> None:
    """Generate one PNG/.npz per seed (resumable; run under torchrun to shard seeds over ranks)."""
    from ..generate import Settings
    from ..generate import generate as run

    settings = Settings(model=model_spec, solver=solver, steps=steps, schedule=schedule, sigma_min=sigma_min,
                        sigma_max=sigma_max, w_stiff=w_stiff, w_con=w_con, scaling=scaling, class_label=class_label,
                        dtype=dtype, batch_size=batch_size, format=fmt)
    try:
        res = run(out, settings, seeds, progress=not quiet, device=device, sleep_per_batch=sleep_per_batch)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if res["rank"] == 0:
        click.echo(json.dumps(res))


@main.command("generate-bench")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/generate_bench"), show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--size", type=int, default=32, show_default=True, help="Image side (3 x size x size).")
@click.option("--steps", type=int, default=18, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--solvers", default="heun", show_default=True, help="Comma-separated solver names.")
@click.option("--w-stiff", type=float, default=1.0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
@click.option("--quiet", is_flag=True)
def generate_bench(out: Path, batch: int, size: int, steps: int, repeats: int, solvers: str, w_stiff: float,
                   threads: int | None, quiet: bool) -> None:
    """Throughput and sampler overhead (share of wall time outside the network): plain vs ERK-Guid, small U-Net, CPU."""
    from ..experiments.generate_bench import format_table, run_bench

    res = run_bench(out, batch=batch, size=size, steps=steps, repeats=repeats,
                    solvers=tuple(s.strip() for s in solvers.split(",") if s.strip()), w_stiff=w_stiff,
                    threads=threads, progress=not quiet)
    click.echo(format_table(res))
    for f in res.get("files", []):
        click.echo(f"wrote {f}")
