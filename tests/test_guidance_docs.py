"""docs/guidance.md's evidence tables are the committed outputs of `erkguid guidance`, formatted."""

from pathlib import Path

import pytest

from erkguid.evaluation import read_results
from erkguid.experiments.guidance import format_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(("name", "num_samples"), [("digits64", 512), ("tree2d", 1024)])
def test_guidance_md_tables_are_the_committed_json(name, num_samples):
    res = read_results(DOCS / "guidance" / f"{name}.json")
    assert res["num_samples"] == num_samples and res["model"] == name
    md = (DOCS / "guidance.md").read_text()
    assert format_table(res) in md
    gaps = ", ".join(f"{k} {v['max_gap_vs_100x_looser']:.1e}" for k, v in res["reference"].items())
    assert f"Reference gap vs a 100x looser solve: {gaps}" in md
