"""docs/adasde.md's evidence tables are the committed outputs of `erkguid adasde-eval` and `erkguid bench --quick`,
formatted by the commands' own formatters."""

from pathlib import Path

import pytest

from erkguid.evaluation import read_results
from erkguid.experiments.adasde_eval import format_tables
from erkguid.experiments.bench import format_tables as bench_tables

DOCS = Path(__file__).resolve().parents[1] / "docs"
EVAL = [("tree2d", "tree2d"), ("digits64", "digits64"), ("learned-tree2d-main", "learned:tree2d-main"),
        ("learned-digits-main", "learned:digits-main")]


def _block(name: str) -> str:
    md = (DOCS / "adasde.md").read_text()
    begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
    return md[md.index(begin) + len(begin):md.index(end)]


@pytest.mark.parametrize(("stem", "model"), EVAL)
def test_adasde_eval_tables_are_the_committed_json(stem, model):
    res = read_results(DOCS / "adasde" / f"{stem}.json")
    s = res["settings"]
    assert (s["models"], s["nfes"], s["seeds"], s["num_samples"]) == ([model], [3, 5, 7], 5, 2048)
    assert [r["model"] for r in res["results"]] == [model] * 3
    assert _block(f"adasde-eval:{stem}") == format_tables(res)


def test_adasde_quick_bench_table_is_the_committed_json():
    rows = read_results(DOCS / "solvers" / "bench-quick.json")["rows"]
    sel = [r for r in rows if r["nfe_target"] == 7 and r["model"] in ("tree2d", "digits64")
           and r["solver"] in ("adasde", "ipndm")]
    assert {r["solver"] for r in sel} == {"adasde", "ipndm"} and len(sel) == 8
    assert _block("bench-quick:adasde") == bench_tables(sel)
