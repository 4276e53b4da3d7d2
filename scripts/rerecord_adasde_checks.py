"""Re-record ``meta.check.sliced_w2`` of the shipped AdaSDE files (src/erkguid/data/adasde/*.json).

Run after a change to what the check depends on (the sampler's per-step noise stream, exact samples):
``PYTHONPATH=src python scripts/rerecord_adasde_checks.py``. Only the recorded number changes; the
distilled coefficients (drawn with distillation's own generator) are untouched. Prints old -> new.
"""

from __future__ import annotations

import json
from pathlib import Path

from erkguid.generate import atomic_write
from erkguid.solvers import shipped, shipped_names
from erkguid.training.adasde import recorded_check

ROOT = Path(__file__).resolve().parents[1] / "src" / "erkguid" / "data" / "adasde"


def main() -> None:
    for name in shipped_names():
        coef = shipped(name)
        check = coef.meta["check"]
        got = recorded_check(coef.meta["model"], coef, num=check["num_samples"])["sliced_w2"]
        path = ROOT / f"{name}.json"
        text = path.read_text()
        needle = f'"sliced_w2": {json.dumps(check["sliced_w2"])}'
        if text.count(needle) != 1:
            raise SystemExit(f"{path}: the recorded value is not found exactly once")
        atomic_write(path, text.replace(needle, f'"sliced_w2": {json.dumps(got)}').encode())
        print(f"{name}: {check['sliced_w2']} -> {got}", flush=True)


if __name__ == "__main__":
    main()
