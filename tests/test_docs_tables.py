"""Published results tables are the committed JSON of a named command, formatted by that command's own formatter.

Each results table sits in a marked block ``<!-- NAME:begin -->`` ... ``<!-- NAME:end -->``; the test reads the committed
JSON (never times or samples anything) and compares the block with the command's formatting of it.
"""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _block(doc: Path, name: str) -> str:
    md = doc.read_text()
    begin, end = f"<!-- {name}:begin -->\n", f"\n<!-- {name}:end -->"
    assert md.count(begin) == 1 and md.count(end) == 1, f"{doc.name}: block {name!r} missing or repeated"
    return md[md.index(begin) + len(begin):md.index(end)]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tune_evidence_table_is_the_committed_json():
    res = json.loads((DOCS / "tune" / "evidence.json").read_text())
    assert len(res["rows"]) == 32 and {r["nfe"] for r in res["rows"]} == {5, 7, 11, 15}
    assert _block(DOCS / "tune.md", "tune:evidence") == _script("tune_evidence").table(res)


def test_ecosystem_diffusers_schedulers_table_is_the_committed_json():
    res = json.loads((DOCS / "ecosystem" / "diffusers_schedulers.json").read_text())
    assert (res["steps"], res["repeats"], res["w_stiff"], res["threads"]) == (20, 5, 1.0, 1)
    rows = res["rows"]
    assert len(rows) == 6 and all(r["reload_ok"] for r in rows)
    assert all(r["strength0_max_diff"] == 0.0 for r in rows)  # the page says: bit-identical at w = 0
    table = _script("diffusers_schedulers_check").format_table(res)
    assert _block(DOCS / "ecosystem.md", "ecosystem:diffusers-schedulers") == table
