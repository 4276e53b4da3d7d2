"""Convert committed results files written before the evaluation harness (erkguid.evaluation) to its schema.

Deterministic and value-preserving: keys are renamed (bench ``problem``/``method``, paper ``target`` -> ``model``/
``solver``), the keys the schema adds are derived from what the file records (demo: ``model``, ``solver``; guidance:
``model``, ``solver``, ``nfe``, ``setting``, ``w_stiff``, ``w_con``, ``scaling``; paper: ``setting``, ``scaling``),
rows are reordered to :meth:`Row.flat`'s key order, and the file is stamped with ``schema`` and ``version``. No number
is recomputed. Usage: ``PYTHONPATH=src python scripts/upgrade_results.py FILE...`` (a file that already has a schema
and no legacy rows is left alone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from erkguid._io import atomic_write_json
from erkguid.evaluation import SCHEMA, SCHEMA_VERSION, Setting

KEYS = ("model", "solver", "steps", "nfe", "setting", "w_stiff", "w_con", "scaling")  # Row.flat()'s leading keys


def _ordered(row: dict[str, Any], first: tuple[str, ...]) -> dict[str, Any]:
    return {**{k: row[k] for k in first if k in row}, **{k: v for k, v in row.items() if k not in first}}


ORDER = KEYS + ("err_mean", "err_median", "sliced_w2", "energy", "loglik", "err_ratio", "err_ratio_lo", "err_ratio_hi",
                "gated", "seconds")  # Row.flat()'s order for demo and bench rows


def bench_row(r: dict[str, Any]) -> dict[str, Any]:
    return _ordered({("model" if k == "problem" else "solver" if k == "method" else k): v for k, v in r.items()}, ORDER)


def demo_row(r: dict[str, Any], model: str) -> dict[str, Any]:
    setting = Setting(r["w_stiff"], r["w_con"])
    return _ordered({**r, "model": model, "solver": "heun", "nfe": float(r["nfe"]), "setting": setting.label,
                     "scaling": setting.scaling}, ORDER)


def guidance_row(r: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    st = res["settings"]
    proj = r["variant"].endswith("Proj")
    setting = Setting(st["w_stiff"] if "Guid" in r["variant"] else 0.0, st["w_con"] if r["variant"] != "alone" else 0.0)
    p = f"proj={st['w_proj']:g}"
    label = setting.label if not proj else f"{setting.label},{p}" if setting.w_stiff else p
    return {"model": res["model"], "solver": st["solver"], "steps": r["steps"], "nfe": float(r["nfe_loop"]), "setting": label,
            "w_stiff": setting.w_stiff, "w_con": setting.w_con, "scaling": setting.scaling,
            **{k: r[k] for k in ("err_mean", "sliced_w2", "nll", "err_ratio", "err_ratio_lo", "err_ratio_hi", "seconds",
                                 "guidance", "variant", "nfe_network")}}


PAPER_ORDER = KEYS + ("err_mean", "fd", "kid_x1e3", "precision", "recall", "inception", "err_ratio", "err_ratio_lo",
                      "err_ratio_hi", "fd_delta", "fd_delta_lo", "fd_delta_hi", "gated", "table", "guidance", "variant")


def paper_row(r: dict[str, Any]) -> dict[str, Any]:
    setting = Setting(r["w_stiff"], r["w_con"])
    return _ordered({**{k: v for k, v in r.items() if k != "target"}, "model": r["target"], "setting": setting.label,
                     "scaling": setting.scaling}, PAPER_ORDER)


def upgrade(res: dict[str, Any]) -> dict[str, Any]:
    """The harness form of a legacy bench, demo, guidance or paper-suite results dict."""
    if "problems" in res and res["rows"] and "method" in res["rows"][0]:
        res = {**res, "rows": [bench_row(r) for r in res["rows"]]}
    elif res.get("rows") and "verdict" in res["rows"][0]:
        res = {**res, "rows": [demo_row(r, res["model"]) for r in res["rows"]]}
    elif res.get("rows") and "target" in res["rows"][0] and "fd_delta" in res["rows"][0]:
        res = {**res, "rows": [paper_row(r) for r in res["rows"]]}
    elif res.get("rows") and "nfe_loop" in res["rows"][0]:
        res = {**res, "rows": [guidance_row(r, res) for r in res["rows"]]}
    elif "schema" in res:
        return res
    else:
        raise ValueError("not a legacy results file this script knows")
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, **res}


def main(paths: list[str]) -> None:
    for p in map(Path, paths):
        res = json.loads(p.read_text())
        new = upgrade(res)
        if new is not res:
            atomic_write_json(p, new)
            print(f"upgraded {p}")


if __name__ == "__main__":
    main(sys.argv[1:])
