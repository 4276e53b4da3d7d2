"""docs/patches.md's tables are the committed JSON of `scripts/patch_evidence.py`, formatted by its own code."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

import erkguid

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "patches.md"


@pytest.fixture(scope="module")
def pe():
    spec = importlib.util.spec_from_file_location("patch_evidence", ROOT / "scripts" / "patch_evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_table_of_the_page_is_a_formatted_json_block(pe):
    md = DOC.read_text()
    blocks = pe.doc_blocks()
    inside = set()
    lines = md.splitlines()
    for key, text in blocks.items():
        begin, end = f"<!-- patches:{key}:begin -->", f"<!-- patches:{key}:end -->"
        assert f"{begin}\n{text}{end}" in md, f"docs/patches.md block {key!r} differs from its JSON (run `summary`)"
        i, j = lines.index(begin), lines.index(end)
        inside.update(range(i, j + 1))
    loose = [ln for k, ln in enumerate(lines) if ln.startswith("|") and k not in inside]
    assert not loose, f"tables outside a JSON-backed block: {loose[:2]}"
    assert set(re.findall(r"<!-- patches:([\w-]+):begin -->", md)) == set(blocks)
    summary = (pe.OUT / "summary.md").read_text()
    for bed in pe.ACCURACY_BEDS:
        assert (pe.OUT / f"accuracy_{bed}.md").read_text() == blocks[f"accuracy-{bed}"]
        assert blocks[f"accuracy-{bed}"] in summary


@pytest.mark.parametrize("bed", ["patches16", "patches32", "patches16-unet"])
def test_accuracy_json_covers_every_solver_and_the_current_recommended_setting(pe, bed):
    res = json.loads((pe.OUT / f"accuracy_{bed}.json").read_text())
    rows = res["rows"]
    assert {(r["solver"], r["nfe_target"], r["setting"]) for r in rows} == {
        (s, n, st) for s in pe.SOLVERS for n in pe.NFE for st in pe.SETTINGS}
    for r in rows:
        kw = {k: r.get(k) for k in ("w_stiff", "w_con", "scaling", "trust")}
        assert kw == pe.setting_kwargs(r["solver"], int(r["nfe"]))[r["setting"]]
        if r["setting"] == "recommended":  # rerun the evidence when erkguid.recommended changes
            assert kw == erkguid.recommended(r["solver"], int(r["nfe"]))
        assert r["same_as_plain"] == (r["w_stiff"] == 0 and r["setting"] != "plain")
        assert r["err_ratio_lo"] <= r["err_ratio"] <= r["err_ratio_hi"]
    if bed == "patches16-unet":  # the reference is converged well below the smallest error reported
        ref = res["reference"]
        smallest = min(r["err_mean"] for r in rows)
        assert 10 * max(ref["est_error_mean"], ref["float32_vs_float64_mean"]) < smallest
