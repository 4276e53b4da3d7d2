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
    vec = r7["vector"]  # the power vector lies in the dominant eigenspace even where v1 is arbitrary
    assert vec["eigenspace_alignment_median"] > 0.99 and vec["v1_abs_cos_median"] <= vec["eigenspace_alignment_median"]
    assert 0 < vec["fraction_degenerate"] < 1


def test_cli_reproduce_and_bad_name(tmp_path):
    r = CliRunner().invoke(main, ["reproduce", "fig6a", "--quick", "--quiet", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "paper: alpha = z^2/6 + O(z^3)" in r.output and (tmp_path / "fig6a.png").exists()
    bad = CliRunner().invoke(main, ["reproduce", "fig9"])
    assert bad.exit_code != 0 and "fig9" in bad.output
    with pytest.raises(ValueError, match="name must be one of"):
        rp.reproduce("fig9", tmp_path)


def test_fig2_fig3_use_the_dominant_eigenspace_with_its_random_baseline():
    r2 = rp.run_fig2(quick=True, progress=False)
    m = r2["models"]["tree2d"]
    assert m["dim"] == 2 and all(dim in (1.0, 2.0) for dim in m["dominant_dim"])
    for dim, base in zip(m["dominant_dim"], m["random_baseline"]):  # torch's median is an element: sqrt commutes
        assert base == pytest.approx((dim / 2) ** 0.5)
    for k, al in m["alignment"].items():
        # S contains v1, so ||P_S u|| >= |<u, v1>| per sample, hence per-bin medians too
        assert all(a >= c - 1e-12 for a, c in zip(al["eigenspace"], al["v1_abs_cos"])), k
        assert all(0.0 <= a <= 1.0 for a in al["eigenspace"])
        # where S is the whole plane the alignment is exactly 1
        assert all(a == pytest.approx(1.0) for a, f in zip(al["eigenspace"], m["fraction_S_is_everything"]) if f == 1.0)
    assert any(f == 1.0 for f in m["fraction_S_is_everything"])  # at large sigma the tree's spectrum is isotropic
    rows = {c["figure"]: c for c in r2["claims"]}
    assert "random baseline" in rows["Fig. 2a"]["ours"] and "dim S" in rows["Fig. 2a"]["ours"]
    assert all(c["note"] for c in r2["claims"] if c["verdict"] != "yes")  # a reason for every non-'yes'
    r3 = rp.run_fig3(quick=True, progress=False)
    al3 = r3["models"]["tree2d"]["alignment"]
    assert set(al3) == {"drift_diff", "sol_diff_pair"} and r3["models"]["tree2d"]["random_baseline"] == m["random_baseline"]


def test_excess_and_growth_verdicts():
    assert rp.excess(1.0, 1.0) == 0.0 and rp.excess(0.71, 0.71) == 0.0
    assert rp.excess(0.855, 0.71) == pytest.approx(0.5) and rp.excess(1.0, 0.2) == pytest.approx(1.0)
    assert rp.excess(0.0, 0.5) == pytest.approx(-1.0) and rp.excess(0.45, 0.9) == pytest.approx(-0.5)
    base = [1.0, 1.0, 0.71, 0.125]
    assert rp._grows([1.0, 1.0, 0.8, 0.9], base) == ("yes", "")
    v, note = rp._grows([1.0, 1.0, 0.8, 0.3], base)  # top bin barely above random in dim 1 of 64
    assert v == "partly" and "weakly above random" in note
    assert rp._grows([1.0, 1.0, 0.71, 0.1], base)[0] == "no"
    assert rp._grows([1.0, 1.0, 0.8, 0.7], base, high=0.8)[0] == "partly"
    v, note = rp._grows([1.0, 0.9, 0.2, 0.9], [1.0, 0.99, 0.8, 0.5])  # clear top bin, but Q50-75 far below random
    assert v == "partly" and "Q50-75 is below random" in note
    assert rp._grows([1.0, 0.9, 0.2, 0.9], [1.0, 0.99, 0.8, 0.5], steadily=False) == ("yes", "")
    md = rp.format_rows([rp.claim("F", "c", "p", "o", "partly", "why | not")], "cmd")
    assert md.splitlines()[-1].endswith("| partly (why \\| not) |")


def test_fig1_table1_distribution_over_stiffest_points():
    """Table 1 over the top 1% / 10% stiffest visited points: medians and maxima of the same per-point ratios."""
    res = rp.run_fig1(quick=True, progress=False)
    dist = res["table1"]["distribution"]
    assert dist["top1pct"]["points"] <= dist["top10pct"]["points"] <= dist["visited_points"]
    for d in (dist["top1pct"], dist["top10pct"]):
        assert d["lte_ratio_median"] <= d["lte_ratio_max"] and d["diff_ratio_median"] <= d["diff_ratio_max"]
        assert 0.0 <= d["frac_both_above_3"] <= 1.0
    # the single stiffest point is the first of both sets: its ratios never exceed the sets' maxima
    assert res["table1"]["lte_ratio"] <= dist["top1pct"]["lte_ratio_max"] * (1 + 1e-12)
    rows = [c for c in res["claims"] if "beyond the single stiffest point" in c["claim"]]
    assert len(rows) == 1 and rows[0]["verdict"] in {"yes", "partly", "no"}
