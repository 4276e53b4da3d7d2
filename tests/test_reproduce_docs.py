"""REPRODUCTION.md's digits64 rows are the committed outputs of `erkguid reproduce fig2 / fig3 / fig7`, formatted."""

import json
from pathlib import Path

import pytest

from erkguid.experiments.reproduce import format_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig7"])
def test_reproduction_md_digits_rows_are_the_committed_json(name):
    res = json.loads((ROOT / "docs" / "reproduce" / f"digits64-{name}.json").read_text())
    assert res["name"] == name
    if name == "fig7":  # full size, not --quick
        assert (res["model"], res["num_samples"], res["iters"]) == ("digits64", 8, 300)
    else:
        assert list(res["models"]) == ["digits64"] and res["models"]["digits64"]["n"] == 32 * 30
    rows = format_rows(res["claims"], f"erkguid reproduce {name}").splitlines()[2:]
    assert rows and all("[digits64]" in r for r in rows)
    doc = (ROOT / "REPRODUCTION.md").read_text().splitlines()
    for r in rows:
        assert r in doc, r[:60]
