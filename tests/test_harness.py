"""The evaluation harness: one evaluation of a sampler configuration, one row schema, one results file."""

import json
import subprocess
import sys

import pytest
import torch

import erkguid as eg
from erkguid.evaluation import SCHEMA, SCHEMA_VERSION, Row, Setting, evaluate, read_results, write_results
from erkguid.schedules import edm_sigmas


def test_evaluate_measures_the_engine_nfe_and_the_per_sample_error():
    model = eg.isotropic_gaussian(dim=3, std=0.5)
    x0 = eg.randn_from_seeds(range(6), (3,), sigma=80.0, dtype=torch.float64)
    ref = model.ode_solution(x0, 80.0, 0.0)
    sig = edm_sigmas(5)
    run = evaluate(model, x0, sig, ref, solver="heun", setting=Setting(0.5, 0.0))
    assert run.nfe == eg.SOLVERS["heun"].nfe(5) == 9
    direct = eg.sample(model, x0, sig, solver="heun", w_stiff=0.5, w_con=0.0)
    assert torch.equal(run.x, direct)  # the harness adds measurement, not behaviour
    assert torch.equal(run.err, (direct - ref).flatten(1).norm(dim=1))
    assert 0.0 <= run.gated <= 1.0 and run.seconds > 0 and run.trace.nfe == 9
    capped = evaluate(model, x0, sig, ref, setting=Setting(2.0, 0.0, trust=0.1))
    assert torch.equal(capped.x, eg.sample(model, x0, sig, w_stiff=2.0, w_con=0.0, trust=0.1))


def test_row_flat_is_the_one_schema():
    row = Row("tree2d", "heun", 4, 7.0, Setting(1.0, 0.5), {"err_mean": 0.1}, {"err_ratio": (0.5, 0.4, 0.6)}, 0.25, 1.5,
              {"nfe_target": 7})
    assert row.flat() == {"model": "tree2d", "solver": "heun", "steps": 4, "nfe": 7.0, "setting": "w=1,c=0.5", "w_stiff": 1.0,
                          "w_con": 0.5, "scaling": "z2", "err_mean": 0.1, "err_ratio": 0.5, "err_ratio_lo": 0.4,
                          "err_ratio_hi": 0.6, "gated": 0.25, "seconds": 1.5, "nfe_target": 7}
    capped = Row("m", "heun", 2, 3, Setting(1.0, 0.05, "sat", 0.5), {"err_mean": 0.2}).flat()
    assert list(capped)[:10] == ["model", "solver", "steps", "nfe", "setting", "w_stiff", "w_con", "scaling", "trust", "err_mean"]
    assert (capped["setting"], capped["trust"]) == ("w=1,c=0.05,sat,trust=0.5", 0.5)
    untimed = Row("m", "euler", 2, 2, Setting(), {}, gated=None, seconds=None, extras={"setting": "baseline"}).flat()
    assert "gated" not in untimed and "seconds" not in untimed and untimed["setting"] == "baseline"


def test_results_file_round_trip_and_schema_errors(tmp_path):
    (f,) = write_results(tmp_path, "x", {"rows": [{"a": float("nan")}]})
    res = read_results(f)
    assert (res["schema"], res["version"], res["rows"]) == (SCHEMA, SCHEMA_VERSION, [{"a": None}])
    (tmp_path / "old.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match=r"old\.json: not an erkguid results file .*found schema None"):
        read_results(tmp_path / "old.json")
    (tmp_path / "new.json").write_text(json.dumps({"schema": SCHEMA, "version": SCHEMA_VERSION + 1}))
    with pytest.raises(ValueError, match="version <= 1"):
        read_results(tmp_path / "new.json")


def test_the_library_does_not_import_the_experiments():
    """erkguid.evaluation is library (tune uses it); the experiment configurations on top of it are never imported by it."""
    code = "import sys, erkguid, erkguid.tune; print(any(m.startswith('erkguid.experiments') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
