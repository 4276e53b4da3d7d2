"""Each `erkguid reproduce` target runs in --quick form and reports the paper's numbers beside ours."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from erkguid.cli import main
from erkguid.experiments import reproduce as rp


@pytest.mark.parametrize("name", ["fig1", "fig2", "fig3", "fig6a", "fig7"])
def test_quick_targets_write_png_json_md(name, tmp_path):
    (res,) = rp.reproduce(name, tmp_path, quick=True, progress=False)
    for ext in ("json", "md", "png"):
        assert (tmp_path / f"{name}.{ext}").stat().st_size > 100
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["claims"] and all(c["verdict"] in {"yes", "no", "partly"} for c in data["claims"])
    md = (tmp_path / f"{name}.md").read_text()
    assert md.count("\n") == len(data["claims"]) + 2 and f"erkguid reproduce {name} --quick" in md


def test_fig1_table1_quantities_are_consistent(tmp_path):
    res = rp.run_fig1(quick=True, progress=False)
    tab = res["table1"]
    assert math.isclose(tab["lte_ratio"], tab["lte_dominant"] / tab["lte_subdominant"])
    stiff, calm = res["regions"]["stiff"], res["regions"]["non-stiff"]
    assert abs(stiff["eigvals"][0]) > 5 * abs(calm["eigvals"][0])  # the stiff centre is much stiffer than the trunk
    assert res["step"] == 29 and abs(res["sigma"] - 0.01575) < 1e-4


def test_fig6a_values_are_exact():
    res = rp.run_fig6a(quick=True, progress=False)
    assert math.isclose(res["values"]["z=3"]["alpha"], (math.exp(3) - 1) / 3 - 1 - 1.5, rel_tol=1e-12)
    assert res["min_alpha"] >= 0.0
    assert res["max_rel_gap"]["|z|<=0.1"] == pytest.approx(0.1 / 4, rel=0.1)  # next Taylor term z^3/24


def test_fig3_estimator_correlates_and_fig7_power_iteration_matches_exact():
    r3 = rp.run_fig3(quick=True, progress=False)
    assert r3["models"]["tree2d"]["spearman"] > 0.8
    r7 = rp.run_fig7(quick=True, progress=False)
    assert r7["final_vs_exact_median"] < 1e-3


def test_cli_reproduce_and_bad_name(tmp_path):
    r = CliRunner().invoke(main, ["reproduce", "fig6a", "--quick", "--quiet", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "paper: alpha = z^2/6 + O(z^3)" in r.output and (tmp_path / "fig6a.png").exists()
    bad = CliRunner().invoke(main, ["reproduce", "fig9"])
    assert bad.exit_code != 0 and "fig9" in bad.output
    with pytest.raises(ValueError, match="name must be one of"):
        rp.reproduce("fig9", tmp_path)
