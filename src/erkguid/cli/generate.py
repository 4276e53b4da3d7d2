"""``erkguid generate`` (one file per seed, resumable, sharded over torchrun ranks) and ``erkguid sample`` (in memory,
one .npz + a preview); both resolve models with :func:`erkguid.generate.resolve_model`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from . import main

ALLOW_PICKLE_HELP = ("Allow a pickled model (edm:PICKLE, learned:FILE.pt) to be unpickled. Unpickling runs any code the file "
                     "holds: use it only for files you trust as much as a program you would run. A preset or metadata "
                     "file cannot set it.")

SAMPLE_DEFAULTS: dict[str, Any] = {"solver": "heun", "steps": 18, "schedule": "edm", "w_stiff": 0.0, "w_con": 0.0,
                                   "scaling": "z2"}


def _common_options(f):
    """Options shared by ``generate`` and ``sample``: model, preset, solver, grid, ERK-Guid, solver options."""
    opts = [
        click.option("--model", "model_spec", default=None,
                     help="Model spec: built-in (tree2d, digits64, digits64-image, gauss), gmm:FILE.npz, learned:NAME|FILE, "
                          "diffusers:DIR, edm:PICKLE::SOURCE_DIR (needs --allow-pickle), or an entry-point scheme "
                          "[default: the preset's].",),
        click.option("--preset", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="A preset from `erkguid tune` (model, solver, options, sigmas, strengths); it fixes the NFE."),
        click.option("--allow-pickle", is_flag=True, help=ALLOW_PICKLE_HELP),
        click.option("--solver", default=None, help="Registered solver [preset or heun]."),
        click.option("--steps", type=click.IntRange(min=1), default=None, help="Sampling steps [18]; not with --preset."),
        click.option("--schedule", default=None, help="Sigma grid: edm, logsnr, time_uniform [edm]; not with --preset."),
        click.option("--sigma-min", type=float, default=None, help="Default: the model's."),
        click.option("--sigma-max", type=float, default=None, help="Default: the model's."),
        click.option("--solver-options", default=None, help='Solver options as JSON, e.g. \'{"order": 3}\'.'),
        click.option("--adasde-coefficients", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="AdaSDE coefficients file (.json/.safetensors): solver adasde on the file's own grid."),
        click.option("--w-stiff", type=float, default=None,
                     help="ERK-Guid strength (Eq. 19); 0 = the plain solver [preset, else erkguid.recommended(solver, NFE)]."),
        click.option("--w-con", type=float, default=None, help="Stiffness threshold of the gate [preset or recommended]."),
        click.option("--scaling", default=None, help="z2, abs, alpha (App. B.3) or sat [preset or recommended]."),
        click.option("--trust", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Bound each ERK-Guid correction by TRUST x the pair's distance [preset or none: the paper's]."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _settings(model_spec, preset, solver, steps, schedule, sigma_min, sigma_max, solver_options, adasde_coefficients, w_stiff,
              w_con, scaling, trust, **rest):
    """A :class:`erkguid.generate.Settings` from the command line and an optional preset (explicit strengths win; a
    preset's grid, solver and NFE cannot be changed)."""
    from ..generate import Settings

    cfg: dict[str, Any] = {"model": model_spec, "solver": solver, "steps": steps, "schedule": schedule or "edm",
                           "sigma_min": sigma_min, "sigma_max": sigma_max, "solver_options": None, "sigmas": None,
                           "w_stiff": w_stiff, "w_con": w_con, "scaling": scaling, "trust": trust}
    if solver_options is not None:
        try:
            cfg["solver_options"] = json.loads(solver_options)
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="--solver-options") from None
        if not isinstance(cfg["solver_options"], dict):
            raise click.BadParameter("must be a JSON object", param_hint="--solver-options")
    if adasde_coefficients is not None:
        from ..solvers import AdaSDECoefficients

        if solver not in (None, "adasde"):
            raise click.BadParameter(f"AdaSDE coefficients need solver adasde, not {solver!r}", param_hint="--solver")
        try:
            coef = AdaSDECoefficients.load(str(adasde_coefficients))
        except (OSError, ValueError, KeyError) as e:
            raise click.BadParameter(str(e), param_hint="--adasde-coefficients") from None
        cfg.update(solver="adasde", sigmas=coef.grid().tolist(),
                   solver_options={**(cfg["solver_options"] or {}), "coefficients": str(adasde_coefficients)})
    if preset is not None:
        from ..tune import read_preset

        clash = [n for n, v in (("--solver", solver), ("--steps", steps), ("--schedule", schedule), ("--sigma-min", sigma_min),
                                ("--sigma-max", sigma_max), ("--solver-options", solver_options),
                                ("--adasde-coefficients", adasde_coefficients)) if v is not None]
        if clash:
            raise click.UsageError(f"--preset fixes the solver, its options and the sigma grid (its NFE); drop "
                                   f"{', '.join(clash)} or run erkguid tune for another budget")
        try:
            p = read_preset(preset)
        except (OSError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--preset") from None
        if model_spec is not None and model_spec != p["model"]:
            click.echo(f"warning: preset {preset} was tuned for model {p['model']!r}, not {model_spec!r}", err=True)
        cfg.update(model=model_spec or p["model"], solver=p["solver"], solver_options=p["solver_options"], sigmas=p["sigmas"],
                   **{k: p.get(k) if cfg[k] is None else cfg[k] for k in ("w_stiff", "w_con", "scaling", "trust")})
    if cfg["model"] is None:
        raise click.UsageError("give --model SPEC or --preset FILE")
    steps_n = len(cfg["sigmas"]) - 1 if cfg["sigmas"] is not None else (cfg["steps"] or SAMPLE_DEFAULTS["steps"])
    if all(cfg[k] is None for k in ("w_stiff", "w_con", "scaling", "trust")):  # nothing chosen: the evidence-backed default
        from ..recommend import recommended
        from ..solvers import get_solver

        name = cfg["solver"] or SAMPLE_DEFAULTS["solver"]
        try:
            nfe = get_solver(name).nfe(int(steps_n), cfg["solver_options"])
        except (ValueError, TypeError) as e:
            raise click.BadParameter(str(e), param_hint="--solver") from None
        cfg.update(recommended(name, nfe))
    return Settings(model=cfg["model"], solver=cfg["solver"] or SAMPLE_DEFAULTS["solver"], steps=int(steps_n),
                    schedule=cfg["schedule"], sigma_min=sigma_min, sigma_max=sigma_max,
                    w_stiff=float(cfg["w_stiff"] or 0.0), w_con=float(cfg["w_con"] or 0.0), scaling=cfg["scaling"] or "z2",
                    solver_options=cfg["solver_options"], sigmas=cfg["sigmas"], trust=cfg["trust"], **rest)


@main.command()
@_common_options
@click.option("--seeds", required=True, help="Seeds, e.g. 0-49999 or 0,5,10-19 (inclusive); one output file per seed.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--class", "class_label", type=int, default=None, help="Fixed class label (default: drawn from each seed).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--batch", "batch_size", type=int, default=64, show_default=True,
              help="Samples per batch (fixed chunks of the seed list).")
@click.option("--format", "fmt", type=click.Choice(["auto", "png", "npz"]), default="auto", show_default=True,
              help="auto: PNG for image-shaped states (C,H,W), else .npz.")
@click.option("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate(seeds: str, out: Path, class_label: int | None, dtype: str, batch_size: int, fmt: str, device: str | None,
             quiet: bool, allow_pickle: bool, **common) -> None:
    """Generate one PNG/.npz per seed (resumable; run under torchrun to shard seeds over ranks).

    Every setting is checked before OUT is touched. One run per folder: a second run into the same OUT
    fails at once (lock file OUT/.generate.lock). Nothing in OUT that this command did not create is
    deleted or overwritten; a folder with seed folders but no generate.json is refused.
    """
    from .._io import to_json
    from ..generate import generate as run

    settings = _settings(**common, class_label=class_label, dtype=dtype, batch_size=batch_size, format=fmt)
    try:
        res = run(out, settings, seeds, progress=not quiet, device=device, allow_pickle=allow_pickle)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    if res["rank"] == 0:
        click.echo(to_json(res))


@main.command("generate-bench")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/generate_bench"), show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--size", type=int, default=32, show_default=True, help="Image side (3 x size x size).")
@click.option("--steps", type=int, default=18, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--solvers", default="heun", show_default=True, help="Comma-separated solver names.")
@click.option("--w-stiff", type=float, default=1.0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
@click.option("--quiet", is_flag=True)
def generate_bench(out: Path, batch: int, size: int, steps: int, repeats: int, solvers: str, w_stiff: float,
                   threads: int | None, quiet: bool) -> None:
    """Throughput and sampler overhead (share of wall time outside the network): plain vs ERK-Guid, small U-Net, CPU."""
    from ..experiments.generate_bench import format_table, run_bench
    from ..solvers import SOLVERS

    names = tuple(s.strip() for s in solvers.split(",") if s.strip())
    bad = [n for n in names if n not in SOLVERS]
    if bad or not names:
        raise click.BadParameter(f"unknown solvers {bad}; choose from {', '.join(sorted(SOLVERS))}", param_hint="--solvers")
    res = run_bench(out, batch=batch, size=size, steps=steps, repeats=repeats, solvers=names, w_stiff=w_stiff,
                    threads=threads, progress=not quiet)
    click.echo(format_table(res))
    for f in res.get("files", []):
        click.echo(f"wrote {f}")


@main.command("sample")
@_common_options
@click.option("--class", "class_label", type=int, default=None, help="Fixed class label (default: drawn from each seed).")
@click.option("--num-samples", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="First per-sample seed.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("runs/sample.npz"), show_default=True,
              help="The .npz (samples, seeds, labels), written at exactly this path; a PNG preview goes next to it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sample_cmd(class_label: int | None, num_samples: int, seed: int, dtype: str, out: Path, quiet: bool, allow_pickle: bool,
               **common) -> None:
    """Sample any supported model in memory: .npz + PNG preview (image grid, or scatter for 2-D) + a summary.

    Sample i uses seed SEED + i exactly as `erkguid generate` does (same noise, label and solver noise),
    so its result equals generate's file for that seed.
    """
    import time

    import numpy as np

    from .._io import atomic_write_bytes
    from ..generate import npz_bytes, prepare, sample_seeds
    from ..sampling import Trace

    preset = common["preset"]
    settings = _settings(**common, class_label=class_label, dtype=dtype)
    seeds = list(range(seed, seed + num_samples))
    tr = Trace()
    t0 = time.perf_counter()
    try:
        _check_out_dir(out)
        model, sigmas, torch_dtype = prepare(settings, allow_pickle=allow_pickle)
        x, labels = sample_seeds(model, settings, sigmas, seeds, dtype=torch_dtype, callback=tr, progress=not quiet)
    except (ValueError, TypeError, OSError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    seconds = time.perf_counter() - t0
    title = (f"{model.name} {settings.solver} {settings.steps} steps w_stiff={settings.w_stiff:g} "
             f"w_con={settings.w_con:g}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, npz_bytes(samples=x.cpu().numpy(), seeds=np.array(seeds),
                                          labels=labels.cpu().numpy() if labels is not None else np.array([], dtype=np.int64)))
        png = _preview(out.with_suffix(".png"), x.cpu(), model.value_range, title)
    except OSError as e:
        raise click.ClickException(f"--out {out}: {e.strerror or e}") from None
    beta = tr.beta[~tr.beta.isnan()]
    gated = float((beta != 0).double().mean()) if beta.numel() and settings.w_stiff > 0 else 0.0
    grid = "preset grid" if preset is not None else "custom grid" if settings.sigmas is not None else settings.schedule
    click.echo(f"{num_samples} samples of {model.name} {tuple(model.shape)} with {settings.solver}, {settings.steps} steps "
               f"({grid}, sigma {float(sigmas[0]):g} -> {float(sigmas[-2]):g}), NFE {tr.nfe}, "
               f"w_stiff={settings.w_stiff:g}, w_con={settings.w_con:g}, scaling {settings.scaling}"
               + (f", trust {settings.trust:g}" if settings.trust is not None else "")
               + (f" (preset {preset})" if preset is not None else ""))
    xf = x.double()
    click.echo(f"seeds {seeds[0]}..{seeds[-1]}; sample mean {float(xf.mean()):.4f}, std {float(xf.std()):.4f}; "
               f"ERK-Guid active on {100 * gated:.0f}% of sample-steps; {seconds:.1f} s")
    click.echo(f"wrote {out}" + (f" and {png}" if png else " (no preview for this shape)"))


def _preview(path: Path, x, value_range: tuple[float, float], title: str) -> Path | None:
    """Scatter for 2-D states; an image grid for (C, H, W) with C in (1, 3) or square vectors (8x8 digits)."""
    import math

    from ..experiments._output import pyplot

    plt = pyplot()

    shape = tuple(x.shape[1:])
    side = math.isqrt(shape[0]) if len(shape) == 1 else 0
    if shape == (2,):
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1], s=2)
    elif (len(shape) == 3 and shape[0] in (1, 3)) or (len(shape) == 1 and shape[0] > 2 and side * side == shape[0]):
        imgs = x.reshape(-1, 1, side, side) if len(shape) == 1 else x
        lo, hi = value_range
        imgs = ((imgs.double() - lo) / (hi - lo)).clamp(0, 1)
        k, cols = min(64, imgs.shape[0]), 8
        rows = (k + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < k:
                img = imgs[i].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
    else:
        return None
    from .._io import atomic_savefig

    fig.suptitle(title, fontsize=8)
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
    return path


def _check_out_dir(out: Path) -> None:
    """Fail before sampling when ``--out`` cannot be written (``/proc/x.npz``, a file as its folder, no permission)."""
    import os

    from .._io import tmp_name

    if out.is_dir():
        raise OSError(f"--out {out} is a directory; give a file name such as {out / 'samples.npz'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tmp_name(out)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as e:
        raise OSError(f"--out {out}: cannot write there ({e.strerror or e})") from None
