"""``erkguid tune``: the most accurate sampler for any model at an exact NFE budget -> a preset (+ table and plot)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from . import main


def _ints(text: str, hint: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"must be comma-separated integers, got {text!r}", param_hint=hint) from None


@main.command()
@click.option("--model", "model_spec", required=True,
              help="Any model spec: tree2d, digits64, gmm:FILE.npz, learned:NAME|FILE, diffusers:DIR, edm:PKL::SRC "
                   "(with --allow-pickle), or an entry-point scheme.")
@click.option("--nfe", type=click.IntRange(min=1), required=True, help="Exact budget of network evaluations per sample.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Preset file (default runs/tune/MODEL-nfeN.json); the table (.md) and plot (.png) go next to it.")
@click.option("--budget-minutes", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Wall-time budget of the search (the held-out check runs after it).")
@click.option("--calib", type=click.IntRange(min=8), default=128, show_default=True, help="Calibration samples.")
@click.option("--heldout", type=click.IntRange(min=8), default=256, show_default=True, help="Held-out samples (disjoint seeds).")
@click.option("--solvers", default=None, help="Comma-separated solvers to search (default: every registered solver).")
@click.option("--distill", "distill_iters", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also distill deterministic AdaSDE coefficients for the model with this many iterations (0: off).")
@click.option("--curve-nfes", default="5,7,11,15", show_default=True,
              help="NFEs of the standard samplers' error-vs-NFE table and plot (empty: none).")
@click.option("--rtol", type=click.FloatRange(min=0, min_open=True), default=1e-6, show_default=True,
              help="Tolerance of the reference ODE solve.")
@click.option("--reference-data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An .npz of data samples (array 'x', [N, *shape]): the objective becomes sliced W2 to them "
                   "(the held-out report adds it beside the error against the model's own ODE).")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickled models (edm:, .pt checkpoints): trusted files only.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def tune(model_spec: str, nfe: int, out: Path | None, budget_minutes: float, calib: int, heldout: int, solvers: str | None,
         distill_iters: int, curve_nfes: str, rtol: float, reference_data: Path | None, allow_pickle: bool, threads: int | None,
         quiet: bool) -> None:
    """Search solvers, ERK-Guid settings and the time grid (parametric and fitted to the model) at exactly NFE
    evaluations; report the held-out error ratio vs the best plain peer on standard grids; write a preset."""
    import torch

    from ..experiments._output import write_results
    from ..resolve import resolve_model
    from ..solvers import SOLVERS
    from ..tune import TuneConfig, format_table, plot_curve, save_preset
    from ..tune import tune as run

    names = tuple(s.strip() for s in solvers.split(",") if s.strip()) if solvers else None
    bad = [n for n in names or () if n not in SOLVERS]
    if bad or names == ():
        raise click.BadParameter(f"unknown solvers {bad}; choose from {', '.join(sorted(SOLVERS))}", param_hint="--solvers")

    def hits(name: str) -> bool:  # some grid of >= 2 steps spends exactly NFE evaluations
        try:
            return any(SOLVERS[name].nfe(k) == nfe for k in range(2, nfe + 1))
        except ValueError:
            return False

    if not any(hits(n) for n in names or SOLVERS):
        raise click.BadParameter(f"NFE {nfe} is too small: no solver of {sorted(names or SOLVERS)} spends exactly {nfe} "
                                 "evaluations on a grid of at least 2 steps", param_hint="--nfe")
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = resolve_model(model_spec, allow_pickle=allow_pickle)
    except (ValueError, OSError, ImportError, TypeError) as e:
        raise click.BadParameter(str(e), param_hint="--model") from None
    reference = None
    if reference_data is not None:
        from ..tune import load_reference_data

        try:
            reference = load_reference_data(reference_data, model.shape)
        except (ValueError, OSError) as e:
            raise click.BadParameter(str(e), param_hint="--reference-data") from None
    cfg = TuneConfig(reference=reference, nfe=nfe, calib=calib, heldout=heldout, budget_minutes=budget_minutes, rtol=rtol,
                     distill_iters=distill_iters, curve_nfes=_ints(curve_nfes, "--curve-nfes"), solvers=names)
    try:
        res = run(model, nfe, cfg, progress=not quiet)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    path = out or Path("runs/tune") / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', model_spec).strip('-')}-nfe{nfe}.json"
    save_preset(res, path)
    files = write_results(path.parent, path.stem + ".report", {"curve": res["curve"], "heldout": res["heldout"]},
                          markdown=format_table(res), plot=lambda p: plot_curve(res, p))
    for note in res["chosen"]["notes"]:
        click.echo(f"note: {note}")
    click.echo(format_table(res))
    click.echo(f"search {res['chosen']['search_seconds']:.1f} s over {res['chosen']['candidates_scored']} candidates, "
               f"total {res['wall_seconds']:.1f} s")
    click.echo(f"wrote {path} (sample with: erkguid sample --preset {path}); " + ", ".join(files[1:]))
