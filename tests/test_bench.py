"""`erkguid bench` as a library function: custom problems, common random numbers, honest NFE and ratios."""

from __future__ import annotations

import json

import torch

import erkguid as eg
from erkguid.experiments.bench import BenchConfig, Problem, Setting, max_steps, run_bench, steps_for


def test_steps_for_targets():
    assert [steps_for("heun", t) for t in (7, 11, 15, 23)] == [4, 6, 8, 12]
    assert [steps_for("deis", t) for t in (7, 15)] == [7, 15]
    assert steps_for("heun_pc", 15) == 5  # 3n - 2 <= 15
    assert (max_steps("heun", 2), steps_for("heun", 2), max_steps("heun", 0)) == (1, 2, None)


def test_run_bench_custom_problem(tmp_path):
    model = eg.isotropic_gaussian(dim=3, std=0.5)
    calls = {"n": 0}

    def den(x, s):
        calls["n"] += 1
        return model(x, s)

    prob = Problem("g3", den, (3,), reference=lambda x0: model.ode_solution(x0, 80.0, 0.0),
                   truth=lambda n, seed: model.sample(n, seed=seed, dtype=torch.float64), log_prob=model.log_prob)
    cfg = BenchConfig(problems=(prob,), solvers=("heun", "deis"), nfe_targets=(7,),
                      settings=(Setting(), Setting(0.5, 0.0)), num_samples=32, baselines=True, adaptive_taus=(1.0,),
                      pc_settings=((0.02, False),))
    res = run_bench(cfg, tmp_path, progress=False)
    rows = {(r["solver"], r["setting"]): r for r in res["rows"]}
    assert rows[("heun", "plain")]["nfe"] == 7 and rows[("deis", "plain")]["nfe"] == 7
    assert rows[("heun", "plain")]["err_ratio"] == 1.0
    # the ratio is paired: same noise, so it equals the ratio of the two rows' mean errors
    r = rows[("deis", "w=0.5,c=0")]
    assert abs(r["err_ratio"] - r["err_mean"] / rows[("deis", "plain")]["err_mean"]) < 1e-12
    assert rows[("heun", "w=1,c=0.05")]["default"]  # each solver's paper default is added
    assert ("adaptive_heun(tau=1)", "baseline") in rows and ("heun_pc(r=0.02,det)", "baseline") in rows
    assert rows[("heun_pc(r=0.02,det)", "baseline")]["nfe"] == 7
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert len(on_disk["rows"]) == len(res["rows"])
    assert (tmp_path / "bench.md").read_text().count("| deis |") == 3
    assert all((tmp_path / f"bench_{m}.png").stat().st_size > 0 for m in ("err_mean", "sliced_w2", "energy", "loglik"))
    assert calls["n"] > 0


def test_published_full_bench_tables_are_the_commands_json() -> None:
    """docs/solvers.md's `erkguid bench --full` tables are `summarize` of the committed bench.json, unedited."""
    import json
    from pathlib import Path

    from erkguid.experiments.bench import summarize

    root = Path(__file__).resolve().parents[1]
    rows = json.loads((root / "docs" / "bench" / "full" / "bench.json").read_text())["rows"]
    doc = (root / "docs" / "solvers.md").read_text()
    begin, end = "<!-- bench-full:begin -->\n", "<!-- bench-full:end -->"
    assert doc[doc.index(begin) + len(begin):doc.index(end)].strip() == summarize(rows).strip()
