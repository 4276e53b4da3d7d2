"""docs/solvers.md's quick-bench tables are the committed output of `erkguid bench --quick`, summarized."""

from pathlib import Path

from erkguid.evaluation import read_results
from erkguid.experiments.bench import summarize

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_solvers_md_quick_tables_are_the_committed_json():
    res = read_results(DOCS / "solvers" / "bench-quick.json")
    cfg = res["config"]
    assert (cfg["num_samples"], cfg["nfe_targets"], cfg["problems"]) == (256, [7, 15], ["tree2d", "digits64", "gauss"])
    assert "adasde" in {r["solver"] for r in res["rows"]}
    table = summarize(res["rows"])
    assert table.count("### ") == 3 and table in (DOCS / "solvers.md").read_text()


def test_summary_header_names_what_its_cells_hold():
    row = {"model": "p", "nfe_target": 7, "nfe": 7, "solver": "heun", "err_ratio": 1.0}
    plain = {**row, "setting": "plain", "default": False, "err_mean": 1.0}
    dflt = {**row, "setting": "w=1,c=0.05", "default": True, "err_mean": 0.5, "err_ratio": 0.5}
    other = {**row, "setting": "w=0.5,c=0", "default": False, "err_mean": 0.25, "err_ratio": 0.25}
    two = summarize([plain, dflt])
    assert "(plain / default ERK (ratio))" in two and "| heun | 1.0000 / 0.5000 (0.50) |" in two
    three = summarize([plain, dflt, other])
    assert "(plain / default ERK (ratio) / best ERK [setting] (ratio))" in three
    assert "| heun | 1.0000 / 0.5000 (0.50) / 0.2500 [w=0.5,c=0] (0.25) |" in three
