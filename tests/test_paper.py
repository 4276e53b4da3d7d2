"""Paper-suite and tune plumbing on tiny configurations (shipped models, no training)."""

import json

import pytest
import torch
from click.testing import CliRunner

from erkguid.cli import main
from erkguid.experiments.paper import Evaluator, SuiteConfig, make_target, run_paper_suite, table4_solvers
from erkguid.feature_metrics import frechet_distance


def test_tiny_suite_rows_files_and_invariants(tmp_path):
    cfg = SuiteConfig(targets=("tree2d-learned",), num_samples=24, table2_steps=(4,), table2_w=(0.0, 1.0), table3_steps=(6,),
                      table4_nfe=(8,), fig4_steps=(6,), fig4_w=(1.0,), fig4_wcon=(0.0, 0.5), table10_steps=4,
                      table10_tau=(1.0,), table11_r=((0.05, True),), rtol=1e-3, num_boot=5)
    res = run_paper_suite(tmp_path, config=cfg, progress=False)
    rows = res["rows"]
    assert {p.split("/")[-1] for p in res["files"]} == {"paper.json", "paper.md", "paper.png"}
    assert json.loads((tmp_path / "paper.json").read_text())["rows"] == rows
    assert {r["table"] for r in rows} == {"table2", "table3", "table4:nfe8", "fig4", "table10", "table11", "table4:paper-nfe8"}
    t10 = [r for r in rows if r["table"] == "table10"]
    assert [r["variant"] for r in t10] == ["", "", "tau=1"] and t10[2]["nfe"] >= t10[0]["nfe"]
    t11 = [r for r in rows if r["table"] == "table11"]
    assert t11[0]["solver"] == "heun_pc" and t11[0]["variant"] == "r=0.05, stochastic=True" and t11[0]["nfe"] <= t10[0]["nfe"]
    assert sorted({r["solver"] for r in rows if r["table"].startswith("table4")}) == sorted(table4_solvers())
    for r in rows:
        if r["w_stiff"] == 0 and not r["variant"]:
            assert (r["err_ratio"], r["fd_delta"]) == (1.0, 0.0)
        else:
            assert r["err_ratio_lo"] <= r["err_ratio"] <= r["err_ratio_hi"]
            assert r["fd_delta_lo"] <= r["fd_delta_hi"]
    md = (tmp_path / "paper.md").read_text()
    assert "Table 2 analogue" in md and "Fig. 4 analogue" in md and "Table 11 analogue" in md
    assert "cfg w=1.5" in md and "ag w=2" in md


def test_evaluator_metrics_match_direct_computation():
    t = make_target("tree2d-learned", num_ref=256)
    ev = Evaluator(t, 32, rtol=1e-3, num_boot=5)
    row = ev.row("x", "heun", 6, 1.0, 0.5)
    run = ev.run("heun", 6, 1.0, 0.5)
    assert row.metrics["fd"] == pytest.approx(frechet_distance(run.x.numpy(), t.data.numpy()))
    assert row.metrics["err_mean"] == pytest.approx(float((run.x - ev.reference("none", 1.0)).norm(dim=1).mean()))
    # guidance with scale 1 is the main model itself
    x = torch.randn(5, 2)
    s = torch.full((5,), 0.7)
    lab = torch.tensor([0, 1, 0, 1, 0])
    for g in ("cfg", "ag"):
        torch.testing.assert_close(t.guided(g, 1.0)(x, s, class_labels=lab), t.denoiser(x, s, lab))
    with pytest.raises(ValueError, match="guidance must be"):
        t.guided("bogus", 1.0)
    with pytest.raises(ValueError, match="target must be one of"):
        make_target("nope")


def test_cli_errors():
    r = CliRunner().invoke(main, ["bench", "--suite", "paper", "--targets", "nope"])
    assert r.exit_code != 0 and "unknown targets" in r.output
    r = CliRunner().invoke(main, ["bench", "--suite", "paper", "--tables", "table9"])
    assert r.exit_code != 0 and "unknown tables" in r.output
    r = CliRunner().invoke(main, ["bench", "--targets", "tree2d-learned"])
    assert r.exit_code != 0 and "--targets belongs to --suite paper" in r.output
    r = CliRunner().invoke(main, ["bench", "--suite", "paper", "--nfe", "7"])
    assert r.exit_code != 0 and "--nfe belongs to --suite solvers" in r.output
    r = CliRunner().invoke(main, ["train"])
    assert r.exit_code != 0 and "presets" in r.output


def test_paper_cli_quick(tmp_path):
    r = CliRunner().invoke(main, ["bench", "--suite", "paper", "--quick", "--targets", "tree2d-learned", "--num-samples", "16",
                                  "--quiet", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "paper.json").read_text())["rows"]
    quick = SuiteConfig.quick()
    assert {r["steps"] for r in rows if r["table"] == "table2"} == set(quick.table2_steps)
    assert {r["w_con"] for r in rows if r["table"] == "fig4"} == set(quick.fig4_wcon)
    assert "Table 4 analogue" in (tmp_path / "paper.md").read_text()
    assert (tmp_path / "paper.png").stat().st_size > 1000
