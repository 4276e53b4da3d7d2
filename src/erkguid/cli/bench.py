"""``erkguid bench``: the solver x ERK-Guid grid on the exact-score problems (``--suite solvers``) and
the paper-table analogues on the shipped learned models and exact mixtures (``--suite paper``)."""

from __future__ import annotations

from pathlib import Path

import click

from . import main


def _csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


@main.command()
@click.option("--suite", type=click.Choice(["solvers", "paper"]), default="solvers", show_default=True,
              help="solvers: exact-score problems x solvers x NFE x ERK-Guid settings (experiments.bench); "
                   "paper: Tables 2, 3, 4, 10, 11 and Fig. 4 analogues (experiments.paper.run_paper_suite).")
@click.option("--quick", "preset", flag_value="quick", default=True,
              help="Small variant (default). solvers: 3 problems, 8 solvers (AdaSDE where a shipped file matches), "
                   "NFE 7 and 15; paper: SuiteConfig.quick().")
@click.option("--full", "preset", flag_value="full",
              help="solvers: tree2d + digits64, NFE 7/11/15/23, a w_stiff x w_con grid, baselines; paper: every table, "
                   "all four targets, 1024 samples.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory [runs/bench-<preset> or runs/paper-<preset>].")
@click.option("--num-samples", type=click.IntRange(min=16), default=None, help="Override the preset's sample count.")
@click.option("--solvers", default=None, help="suite solvers: comma-separated solver names (override).")
@click.option("--problems", default=None,
              help="suite solvers: comma-separated model specs (tree2d, digits64, gauss, patches16, patches32, learned:NAME, "
                   "gmm:FILE, ...).")
@click.option("--nfe", default=None, help="suite solvers: comma-separated NFE targets (override).")
@click.option("--targets", default=None, help="suite paper: comma-separated subset of the targets (default: the preset's).")
@click.option("--tables", default=None, help="suite paper: comma-separated subset of table2,table3,table4,fig4,table10,table11.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(suite, preset, out, num_samples, solvers, problems, nfe, targets, tables, seed, quiet) -> None:
    """Benchmarks with common random numbers: JSON, markdown and PNGs (``--suite solvers`` or ``--suite paper``)."""
    own = {"solvers": {"--targets": targets, "--tables": tables}, "paper": {"--solvers": solvers, "--problems": problems,
                                                                           "--nfe": nfe}}[suite]
    for name, value in own.items():
        if value is not None:
            other = "paper" if suite == "solvers" else "solvers"
            raise click.UsageError(f"{name} belongs to --suite {other}, not --suite {suite}")
    if suite == "paper":
        _paper(preset, out or Path(f"runs/paper-{preset}"), num_samples, targets, tables, seed, quiet)
    else:
        _solvers(preset, out or Path(f"runs/bench-{preset}"), num_samples, solvers, problems, nfe, seed, quiet)


def _solvers(preset, out, num_samples, solvers, problems, nfe, seed, quiet) -> None:
    from dataclasses import replace

    from ..experiments.bench import FULL, QUICK, format_tables, run_bench, summarize

    cfg = FULL if preset == "full" else QUICK
    cfg = replace(cfg, seed=seed)
    if num_samples:
        cfg = replace(cfg, num_samples=num_samples)
    if solvers:
        cfg = replace(cfg, solvers=_csv(solvers))
    if problems:
        cfg = replace(cfg, problems=_csv(problems))
    if nfe:
        cfg = replace(cfg, nfe_targets=tuple(int(s) for s in _csv(nfe)))
    res = run_bench(cfg, out, progress=not quiet)
    click.echo(format_tables(res["rows"]))
    click.echo(summarize(res["rows"]))
    for note in res.get("notes", []):
        click.echo(f"note: {note}")
    click.echo(f"total {res['seconds']:.1f} s")
    for f in res.get("files", []):
        click.echo(f"wrote {f}")


def _paper(preset, out, num_samples, targets, tables, seed, quiet) -> None:
    from ..experiments.paper import PAPER_NFE, TARGETS, SuiteConfig, format_official, format_suite, run_paper_suite

    cfg = SuiteConfig.quick() if preset == "quick" else SuiteConfig()
    if targets:
        chosen = _csv(targets)
        bad = [t for t in chosen if t not in TARGETS]
        if bad:
            raise click.BadParameter(f"unknown targets {bad}; choose from {', '.join(TARGETS)}", param_hint="--targets")
        cfg.targets = chosen
    if tables:
        chosen_t = _csv(tables)
        allowed = SuiteConfig().tables
        bad = [t for t in chosen_t if t not in allowed]
        if bad:
            raise click.BadParameter(f"unknown tables {bad}; choose from {', '.join(allowed)}", param_hint="--tables")
        cfg.tables = chosen_t
    if num_samples:
        cfg.num_samples = num_samples
    res = run_paper_suite(out, config=cfg, seed=seed, progress=not quiet)
    click.echo(format_suite(res["rows"]))
    if any(r["variant"] in ("official", PAPER_NFE) for r in res["rows"]):
        click.echo("## The official scripts' settings beside ours (docs/learned.md)\n")
        click.echo(format_official(res["rows"]))
    click.echo(f"{cfg.num_samples} samples per row; reference solves rtol {cfg.rtol:g}; {res['seconds']:.0f} s")
    for f in res.get("files", []):
        click.echo(f"wrote {f}")
