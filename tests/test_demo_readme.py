"""README's "What the demo measures" table is the committed output of `erkguid demo` (docs/demo/demo.json), to the
digits it prints."""

import json
import re
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _num(cell: str) -> Decimal:
    return Decimal(cell.replace("*", "").replace("−", "-").strip())


def _close(cell: str, value: float) -> bool:
    """``cell`` is ``value`` rounded to the digits it shows."""
    d = _num(cell)
    return abs(Decimal(repr(value)) - d) <= Decimal(1).scaleb(d.as_tuple().exponent) / 2


def test_readme_demo_table_is_the_committed_demo_json():
    res = json.loads((ROOT / "docs" / "demo" / "demo.json").read_text())
    assert (res["model"], res["num_samples"], res["seed"]) == ("tree2d", 2048, 0)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## What the demo measures"):]
    section = section[:section.index("\n## ", 4)]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 10
    for nfe, w, c, err, ratio, sw, loglik, verdict in rows:
        w_stiff = float(w.split("(")[0])
        w_con = 0.0 if w_stiff == 0 else float(c)
        (r,) = [r for r in res["rows"] if r["nfe"] == int(nfe) and r["w_stiff"] == w_stiff and r["w_con"] == w_con]
        assert _close(err, r["err_mean"]) and _close(sw, r["sliced_w2"]) and _close(loglik, r["loglik"]), (nfe, w, c)
        if w_stiff:
            m = re.match(r"\s*\**([\d.]+) \[([\d.]+), ([\d.]+)\]\**\s*$", ratio)
            assert m and all(_close(g, r[k]) for g, k in zip(m.groups(), ("err_ratio", "err_ratio_lo", "err_ratio_hi")))
        assert verdict.replace("*", "").strip() == r["verdict"], (nfe, w, c)
    gap = re.search(r"agrees with one 100× tighter to ([\d.]+e-\d+)", section).group(1)
    floor = re.search(r"sample sets: ([\d.]+)\)", section).group(1)
    assert f"{res['reference']['max_gap_vs_100x_looser']:.1e}" == gap and _close(floor, res["truth_vs_truth_sliced_w2"])
