"""Shipped AdaSDE coefficient files: load, grids, recorded check statistic, shipped: paths, bench rows."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from erkguid import sample, tree_2d
from erkguid.cli import main
from erkguid.experiments.bench import BenchConfig, run_bench
from erkguid.noise import randn_from_seeds
from erkguid.solvers import AdaSDECoefficients, shipped, shipped_for, shipped_names
from erkguid.training.adasde import DistillConfig, recorded_check, student_levels

MODELS = ("tree2d", "digits64", "learned-tree2d-main", "learned-digits-main")
EXPECTED = sorted(f"{m}-nfe{k}" for m in MODELS for k in (3, 5, 7))


def test_shipped_names_cover_models_and_nfes() -> None:
    assert shipped_names() == EXPECTED


@pytest.mark.recorded
@pytest.mark.parametrize("name", EXPECTED)
def test_shipped_file_loads_matches_grid_and_reproduces_its_check(name: str) -> None:
    coef = shipped(name)
    meta = coef.meta
    nfe = int(name.rsplit("nfe", 1)[1])
    model = meta["model"]
    assert coef.nfe == nfe and meta["check"]["nfe"] == nfe
    assert model.replace(":", "-") == name.rsplit("-nfe", 1)[0]
    assert meta["command"].startswith(f"erkguid distill --model {model} --nfe {nfe} ")
    cfg = DistillConfig(**meta["config"])
    assert cfg.nfe == nfe and meta["iterations_done"] == cfg.iters
    # the grid is the distillation schedule's student levels; sampling elsewhere is refused
    torch.testing.assert_close(coef.sigmas, student_levels(cfg), rtol=1e-12, atol=0)
    coef.check_grid(torch.cat([coef.sigmas, torch.zeros(1, dtype=torch.float64)]))
    with pytest.raises(ValueError, match="sigmas"):
        coef.check_grid(torch.cat([coef.sigmas * 1.01, torch.zeros(1, dtype=torch.float64)]))
    # trained: the coefficients moved away from the neutral (DPM-Solver-2) init, and gamma is on
    assert any(abs(v) > 1e-3 for v in coef.raw["r"].tolist())
    assert all(g > 0 for g in coef.table()["gamma"][1:]) and coef.table()["gamma"][0] == 0
    # the recorded statistic (sliced W2 vs exact true samples, fixed seeds) is reproduced. Everything runs in
    # float64 and nothing depends on LAPACK's choice of eigenbasis (exact samples use the symmetric square root), so
    # what may legitimately vary between machines and BLAS code paths is rounding: ~1e-16 relative per operation,
    # measured 6e-15 across MKL_CBWR=COMPATIBLE/SSE4_2/AVX2/AVX512 and 1-2 threads. Sliced W2 is 1-Lipschitz in the
    # samples, so rel=1e-9 leaves a 1e6 margin for amplification through the few solver steps.
    got = recorded_check(model, coef, num=meta["check"]["num_samples"])["sliced_w2"]
    assert got == pytest.approx(meta["check"]["sliced_w2"], rel=1e-9, abs=0)


def test_shipped_lookup_and_path_form() -> None:
    assert shipped_for("learned:tree2d-main", 5).meta["model"] == "learned:tree2d-main"
    assert shipped_for("tree2d", 9) is None and shipped_for("gauss16", 5) is None
    assert shipped("learned:digits-main-nfe7").to_dict() == shipped("learned-digits-main-nfe7").to_dict()
    with pytest.raises(ValueError, match="name must be one of the shipped"):
        shipped("tree2d-nfe4")
    with pytest.raises(ValueError, match="name must be one of the shipped"):
        AdaSDECoefficients.load("shipped:nope")
    coef = shipped("tree2d-nfe5")
    x0 = randn_from_seeds(range(8), (2,), sigma=80.0, dtype=torch.float64)
    seeds = list(range(100, 108))
    a = sample(tree_2d(), x0, coef.grid(), solver="adasde", solver_options={"coefficients": "shipped:tree2d-nfe5"}, seeds=seeds)
    b = sample(tree_2d(), x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=seeds)
    assert torch.equal(a, b)


def test_bench_includes_adasde_where_a_file_exists() -> None:
    cfg = BenchConfig(problems=("tree2d", "gauss"), solvers=("adasde",), nfe_targets=(5, 15), num_samples=16)
    res = run_bench(cfg, progress=False)
    rows = res["rows"]
    assert {(r["model"], r["nfe_target"], r["setting"]) for r in rows} == {("tree2d", 5, "plain"), ("tree2d", 5, "w=1,c=0.05")}
    assert all(r["solver"] == "adasde" and r["nfe"] == 5 and r["steps"] == 4 for r in rows)
    plain, erk = rows
    assert plain["err_ratio"] == pytest.approx(1.0) and erk["err_ratio"] != pytest.approx(1.0)
    assert len(res["notes"]) == 3 and all("adasde skipped" in n for n in res["notes"])
    assert any("tree2d at NFE 15" in n for n in res["notes"]) and any("gauss16 at NFE 5" in n for n in res["notes"])


def test_distill_cli_rejects_unknown_model() -> None:
    r = CliRunner().invoke(main, ["distill", "--model", "learned:nope", "--iters", "1"])
    assert r.exit_code != 0 and "--model" in r.output and "learned:nope" in r.output


def test_shipped_files_are_plain_json() -> None:
    from importlib import resources

    for name in EXPECTED:
        d = json.loads(resources.files("erkguid.data").joinpath("adasde", f"{name}.json").read_text())
        assert d["format"] == "erkguid.adasde/1" and "check" in d["meta"]


def test_adasde_eval_on_a_learned_model_measures_against_the_true_distribution() -> None:
    from erkguid.experiments.adasde_eval import format_tables, run_adasde_eval
    from erkguid.training.adasde import resolve_model_spec

    res = run_adasde_eval(None, models=("learned:digits-main",), nfes=(3,), seeds=2, iters=1, batch=8, num_samples=64,
                          progress=False)
    (row,) = res["results"]
    assert row["truth"] == "digits64 exact samples" and row["metrics"][-2:] == ["fd", "kid_x1e3"]
    assert set(row["paired"]["adasde - twin"]) == set(row["metrics"])
    assert len(row["arms"]["adasde"]["fd"]) == 2 and row["arms"]["teacher"]["to_teacher"] == [0.0]
    # the teacher is the learned model's own DPM-Solver-2 solve, measured against the exact mixture
    _, _, true_model = resolve_model_spec("learned:digits-main")
    assert true_model.name == "digits64" and row["floor_fd"] < row["arms"]["adasde"]["fd"][0]
    assert "FD (digits feat.)" in format_tables(res)
    with pytest.raises(ValueError, match="NAME must be one of the shipped denoisers"):
        resolve_model_spec("learned:digits-classifier")
