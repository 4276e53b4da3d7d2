"""AdaSDE commands: ``distill`` (learn coefficients) and ``adasde-eval`` (the evidence study)."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


@main.command()
@click.option("--model", default="tree2d", show_default=True,
              help="Any model spec (tree2d, digits64, learned:NAME, gmm:FILE, diffusers:DIR, edm:PKL::SRC, entry-point schemes).")
@click.option("--allow-pickle", is_flag=True, help="Allow loading pickled models (edm:, .pt checkpoints); trusted files only.")
@click.option("--nfe", type=click.IntRange(min=1), default=5, show_default=True, help="Student NFE (odd with AFS).")
@click.option("--gamma-max", type=click.FloatRange(min=0), default=0.01, show_default=True, help="0 = the deterministic twin.")
@click.option("--M", "m", type=click.IntRange(min=1), default=3, show_default=True, help="Teacher refinement per student step.")
@click.option("--iters", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True)
@click.option("--init", type=click.Choice(["neutral", "random"]), default="neutral", show_default=True,
              help="neutral: all raw = 0 (DPM-Solver-2); random: the official randn init.")
@click.option("--no-afs", is_flag=True, help="No analytic first step (then NFE is even).")
@click.option("--official-step0-gamma", is_flag=True,
              help="Official loop: gamma's table gets a zero gradient at step 0, so Adam still updates it there.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/adasde/coefficients.json"),
              show_default=True, help="Coefficients file (.json or .safetensors).")
@click.option("--resume", is_flag=True, help="Continue from OUT's checkpoint (OUT.ckpt.json) if present.")
@click.option("--stop-at", type=click.IntRange(min=1), default=None, help="Stop after this many iterations (resume later).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def distill(model: str, nfe: int, gamma_max: float, m: int, iters: int, batch: int, lr: float, init: str, no_afs: bool,
            official_step0_gamma: bool, seed: int, out: Path, resume: bool, stop_at: int | None, threads: int,
            quiet: bool, allow_pickle: bool) -> None:
    """Distill AdaSDE coefficients for a model from a DPM-Solver-2 teacher.

    The file records the settings, the losses and a check statistic (``meta['check']``: sliced W2 of
    512 fixed-seed samples vs exact true samples, reproducible with
    ``erkguid.training.adasde.recorded_check``)."""
    import torch

    from ..training.adasde import DistillConfig, distill_adasde, evaluate_losses, recorded_check, resolve_model_spec

    torch.set_num_threads(threads)
    try:
        mdl, shape, _ = resolve_model_spec(model, allow_pickle=allow_pickle)
    except (ValueError, OSError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    cfg = DistillConfig(nfe=nfe, afs=not no_afs, M=m, gamma_max=gamma_max, init=init, iters=iters, batch=batch, lr=lr, seed=seed,
                       official_step0_gamma=official_step0_gamma)
    try:
        cfg.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    ckpt = out.with_name(out.stem + ".ckpt.json")
    try:
        res = distill_adasde(mdl, cfg, shape=shape, checkpoint=ckpt, resume=resume, stop_at=stop_at, progress=not quiet,
                             meta={"model": model})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    coef = res.coefficients
    coef.meta["eval_losses"] = evaluate_losses(mdl, coef, shape, cfg)
    coef.meta["check"] = recorded_check(model, coef, allow_pickle=allow_pickle)
    coef.meta["command"] = (f"erkguid distill --model {model} --nfe {nfe} --gamma-max {gamma_max:g} --M {m} --iters {iters} "
                            f"--batch {batch} --lr {lr:g} --init {init} --seed {seed}" + (" --no-afs" if no_afs else "")
                            + (" --official-step0-gamma" if official_step0_gamma else ""))
    try:
        coef.save(out)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{model}: {coef}")
    click.echo(f"teacher NFE {res.teacher_nfe}; {res.seconds:.1f} s; per-step loss vs teacher (fixed eval batch): "
               f"{', '.join(f'{v:.4g}' for v in coef.meta['eval_losses'])}; "
               + (f"check: sliced W2 vs truth {coef.meta['check']['sliced_w2']:.4f}" if "sliced_w2" in coef.meta["check"]
                  else f"check: {coef.meta['check']['skipped']}"))
    click.echo(f"wrote {out} (checkpoint {ckpt})")


@main.command("adasde-eval")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/adasde"), show_default=True)
@click.option("--models", default="tree2d,digits64", show_default=True,
              help="Comma-separated models: exact (tree2d, digits64) or learned:NAME.")
@click.option("--nfes", default="3,5,7", show_default=True, help="Comma-separated odd NFEs.")
@click.option("--seeds", type=click.IntRange(min=2), default=5, show_default=True, help="Distillation seeds per arm.")
@click.option("--iters", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--num-samples", type=click.IntRange(min=64), default=2048, show_default=True)
@click.option("--w-stiff", type=click.FloatRange(min=0), default=0.5, show_default=True, help="ERK-Guid strength on AdaSDE.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quiet", is_flag=True)
def adasde_eval(out: Path, models: str, nfes: str, seeds: int, iters: int, batch: int, num_samples: int, w_stiff: float,
                threads: int, quiet: bool) -> None:
    """AdaSDE vs its gamma=0 twin, untrained DPM-2, other solvers and the teacher (metrics vs the true distribution)."""
    import torch

    from ..experiments.adasde_eval import format_tables, run_adasde_eval
    from ..training.adasde import DistillConfig, resolve_model_spec

    try:
        nfe_list = tuple(int(s) for s in nfes.split(",") if s.strip())
        for n in nfe_list:
            DistillConfig(nfe=n).check()
    except ValueError as e:
        raise click.BadParameter(f"{nfes!r}: {e}" if "invalid literal" not in str(e) else
                                 f"must be comma-separated odd integers, got {nfes!r}", param_hint="--nfes") from None
    model_list = tuple(s.strip() for s in models.split(",") if s.strip())
    try:
        for m in model_list:
            resolve_model_spec(m)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--models") from None
    if not nfe_list or not model_list:
        raise click.UsageError("--models and --nfes must each name at least one value")
    torch.set_num_threads(threads)
    res = run_adasde_eval(out, models=model_list, nfes=nfe_list, seeds=seeds, iters=iters, batch=batch,
                          num_samples=num_samples, w_stiff=w_stiff, progress=not quiet)
    click.echo(format_tables(res))
    for f in res.get("files", []):
        click.echo(f"wrote {f}")
