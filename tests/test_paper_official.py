"""The official scripts' settings in the paper suite (Tables 2, 3), the paper's Table 4 NFE accounting (grids
ending at sigma_min, no final step to 0), and docs/learned.md's table against its committed JSON."""

import json
import re
from pathlib import Path

import pytest
import torch

from erkguid.evaluation import read_results
from erkguid.experiments.paper import (
    OFFICIAL_TABLE2,
    OFFICIAL_TABLE3_SCALES,
    PAPER_NFE,
    Evaluator,
    SuiteConfig,
    format_official,
    format_suite,
    make_target,
    official_jobs,
    paper_steps,
)
from erkguid.schedules import edm_sigmas

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_official_settings_are_the_official_scripts():
    # scripts/reproduce.sh of mlvlab/ERK-Guid; guidance scales of EDM2's s-guid-fid (1.4) / s-autog-fid (2.1) presets
    assert OFFICIAL_TABLE2 == {8: (0.5, 0.1), 16: (0.75, 0.3)}
    assert OFFICIAL_TABLE3_SCALES == {16: {"cfg": 1.2, "ag": 1.55}, 32: {"cfg": 1.4, "ag": 2.1}}
    jobs = official_jobs(SuiteConfig(tables=("table2", "table3")))
    t2 = [a for a, _ in jobs if a[0] == "table2:official"]
    assert t2 == [("table2:official", "heun", 8, 0.5, 0.1), ("table2:official", "heun", 16, 0.75, 0.3)]
    t3 = {(a[2], a[5], a[6], a[3], a[4]) for a, _ in jobs if a[0] == "table3:official"}
    assert t3 == {(16, "cfg", 1.2, 0.0, 0.0), (16, "cfg", 1.2, 0.75, 0.5), (16, "ag", 1.55, 0.0, 0.0),
                  (16, "ag", 1.55, 0.75, 0.5), (32, "cfg", 1.4, 0.0, 0.0), (32, "cfg", 1.4, 1.0, 0.5),
                  (32, "ag", 2.1, 0.0, 0.0), (32, "ag", 2.1, 1.0, 0.5)}


@pytest.mark.parametrize(("solver", "nfe", "steps"), [("heun", 6, 3), ("heun", 10, 5), ("dpm2", 8, 4), ("deis", 6, 6)])
def test_paper_nfe_rows_spend_the_budget_on_a_grid_ending_at_sigma_min(solver, nfe, steps):
    assert paper_steps(solver, nfe) == steps  # diff-sampler: Heun NFE 6 = 3 Heun intervals (erkguid's to-zero grid: 2 + Euler)
    ev = Evaluator(make_target("tree2d-exact", num_ref=64), 8, rtol=1e-5, num_boot=5)
    run = ev.run(solver, steps, 0.0, 0.0, to_zero=False)
    assert run.nfe == nfe  # the engine's own count
    sigma_min = float(edm_sigmas(steps + 1)[-2])
    assert sigma_min == pytest.approx(0.002)
    ref = ev.reference("none", 1.0, sigma_min)  # the error is measured at sigma_min, where the run stops
    assert torch.equal(run.err, (run.x - ref).flatten(1).norm(dim=1))
    assert not torch.equal(ref, ev.reference("none", 1.0))


def test_learned_md_official_table_is_the_committed_json():
    res = json.loads((DOCS / "learned" / "official.json").read_text())
    rows = res["rows"]
    assert {r["variant"] for r in rows} >= {"official", PAPER_NFE}
    assert res["config"]["num_samples"] == 512 and set(res["config"]["tables"]) == {"table2", "table3", "table4"}
    assert format_official(rows) in (DOCS / "learned.md").read_text()


def _shown(cell: str, value: float) -> bool:
    """``cell`` (a number as printed: sign, decimals) is ``value`` to the digits it shows."""
    dec = len(cell.split(".")[1]) if "." in cell else 0
    return abs(float(cell) - value) <= 0.5 * 10.0**-dec + 1e-12


def test_learned_md_table2_is_the_committed_json():
    rows = [r for r in json.loads((DOCS / "learned" / "official.json").read_text())["rows"] if r["table"] == "table2"]
    md = (DOCS / "learned.md").read_text()
    sec = md[md.index("### Table 2 analogue"):md.index("Paper, Table 2")]
    lines = [ln for ln in sec.splitlines() if ln.startswith("| ") and not ln.startswith("| target")]
    assert len(lines) == 10
    number = r"[-+]?\d*\.?\d+"
    for ln in lines:
        cells = [c.strip().replace("*", "") for c in ln.split("|")[1:-1]]
        target, steps = cells[0], int(cells[1])

        def row(w, target=target, steps=steps):
            (r,) = [r for r in rows if r["model"] == target and r["steps"] == steps and r["w_stiff"] == w]
            return r

        err, fd = cells[2].split(" / ")
        assert _shown(err, row(0.0)["err_mean"]) and _shown(fd, row(0.0)["fd"]), ln
        for k, w in zip((3, 5, 7), (0.5, 1.0, 2.0)):
            r = row(w)
            for cell, keys in ((cells[k], ("err_ratio", "err_ratio_lo", "err_ratio_hi")),
                               (cells[k + 1], ("fd_delta", "fd_delta_lo", "fd_delta_hi"))):
                shown = re.findall(number, cell.replace("(n.s.)", ""))
                assert shown and all(_shown(c, r[key]) for c, key in zip(shown, keys)), (ln, cell)
                if "(n.s.)" in cell:  # not significant: the interval contains 0
                    assert r["fd_delta_lo"] <= 0 <= r["fd_delta_hi"], (ln, cell)


def test_learned_md_table3_is_the_committed_json():
    rows = [r for r in json.loads((DOCS / "learned" / "official.json").read_text())["rows"] if r["table"] == "table3"]
    md = (DOCS / "learned.md").read_text()
    sec = md[md.index("### Table 3 analogue"):md.index("Paper, Table 3")]
    lines = [ln for ln in sec.splitlines() if ln.startswith("| ") and not ln.startswith("| target")]
    assert len(lines) == 9
    number = r"[-+]?\d*\.?\d+"
    for ln in lines:
        target, steps, kind, ratio, dfd, pr = [c.strip() for c in ln.split("|")[1:-1]]
        guidance = {"CFG": "cfg w=1.5", "AG": "ag w=2"}[kind]
        mine = [r for r in rows if (r["model"], r["steps"], r["guidance"]) == (target, int(steps), guidance)]
        (base,) = [r for r in mine if r["w_stiff"] == 0]
        (erk,) = [r for r in mine if r["w_stiff"] > 0]
        for cell, values in ((ratio, [erk["err_ratio"], erk["err_ratio_lo"], erk["err_ratio_hi"]]),
                             (dfd, [erk["fd_delta"], erk["fd_delta_lo"], erk["fd_delta_hi"]]),
                             (pr, [base["precision"], base["recall"], erk["precision"], erk["recall"]])):
            shown = re.findall(number, cell)
            assert len(shown) == len(values) and all(map(_shown, shown, values)), (ln, cell)


def test_learned_md_table4_is_the_committed_json():
    rows = json.loads((DOCS / "learned" / "official.json").read_text())["rows"]
    rows = [r for r in rows if r["table"].startswith("table4:nfe")]
    md = (DOCS / "learned.md").read_text()
    sec = md[md.index("### Table 4 analogue"):md.index("Paper, Table 4")]
    lines = [ln for ln in sec.splitlines() if ln.startswith("| ") and not ln.startswith("| target")]
    assert len(lines) == 7
    number = r"[-+]?\d*\.?\d+"
    for ln in lines:
        target, solver, nfe, ratio, fd = [c.strip().replace("*", "") for c in ln.split("|")[1:-1]]
        budgets = [int(b.split(" (")[0]) for b in nfe.split(" / ")]
        pairs = []
        for b in budgets:
            mine = [r for r in rows if (r["model"], r["solver"], r["table"]) == (target, solver, f"table4:nfe{b + (b % 2)}")]
            (base,) = [r for r in mine if r["w_stiff"] == 0]
            (erk,) = [r for r in mine if r["w_stiff"] > 0]
            assert erk["nfe"] == b, ln
            pairs.append((base, erk))
        shown = re.findall(number, ratio)
        assert len(shown) == 3 and all(_shown(c, e["err_ratio"]) for c, (_, e) in zip(shown, pairs)), ln
        shown = re.findall(number, fd.replace("diverges", ""))
        assert len(shown) == 6 and all(map(_shown, shown, [v for b, e in pairs for v in (b["fd"], e["fd"])])), ln


def test_paper_md_is_the_two_committed_runs_formatted():
    """docs/learned/paper.md is `format_suite` of the rows of its two named commands' JSON (Tables 2-4: official.json;
    Fig. 4, Tables 10-11: fig4-table10-table11.json), unedited."""
    runs = [read_results(DOCS / "learned" / f) for f in ("official.json", "fig4-table10-table11.json")]
    assert [set(r["config"]["tables"]) for r in runs] == [{"table2", "table3", "table4"}, {"fig4", "table10", "table11"}]
    assert all(r["config"]["num_samples"] == 512 and len(r["config"]["targets"]) == 4 for r in runs)
    md = (DOCS / "learned" / "paper.md").read_text()
    body = md[md.index("-->\n") + 4:].strip()
    assert body == format_suite(runs[0]["rows"] + runs[1]["rows"]).strip()
    assert {r["table"] for r in runs[1]["rows"]} == {"fig4", "table10", "table11"}
