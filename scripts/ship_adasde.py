"""Distill the AdaSDE coefficient files shipped in ``src/erkguid/data/adasde`` with ``erkguid distill``.

Each file is ``<model>-nfe<k>.json`` (``learned:NAME`` becomes ``learned-NAME``); its ``meta`` records the
command, the settings, the losses and the check statistic that ``tests/test_adasde_shipped.py`` reproduces.
Usage: ``PYTHONPATH=src python scripts/ship_adasde.py [--models tree2d,...] [--nfes 3,5,7]`` (about 5 min on 2 cores).
``--recheck`` keeps the shipped coefficients and recomputes only each file's ``meta.check`` statistic (needed when the
way exact reference samples are drawn or the sampler's per-step noise stream changes; about 1 min). It is the one way
to re-record the shipped checks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "src" / "erkguid" / "data" / "adasde"
MODELS = ("tree2d", "digits64", "learned:tree2d-main", "learned:digits-main")
ITERS, BATCH = 100, 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--nfes", default="3,5,7")
    ap.add_argument("--recheck", action="store_true", help="recompute meta.check of the shipped files only")
    args = ap.parse_args()
    if args.recheck:
        recheck(args.models.split(","), [int(s) for s in args.nfes.split(",")])
        return
    DEST.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for nfe in (int(s) for s in args.nfes.split(",")):
                gamma_max = 0.02 if nfe <= 3 else 0.01  # the released CIFAR-10 runs' values
                out = Path(tmp) / f"{model.replace(':', '-')}-nfe{nfe}.json"
                cmd = [sys.executable, "-m", "erkguid", "distill", "--model", model, "--nfe", str(nfe), "--gamma-max",
                       str(gamma_max), "--iters", str(ITERS), "--batch", str(BATCH), "--seed", "0", "--quiet", "--out", str(out)]
                subprocess.run(cmd, check=True)
                shutil.copy(out, DEST / out.name)
                print(f"shipped {DEST / out.name}", flush=True)


def recheck(models: list[str], nfes: list[int]) -> None:
    from erkguid.generate import atomic_write
    from erkguid.solvers import AdaSDECoefficients
    from erkguid.training.adasde import recorded_check

    for model in models:
        for nfe in nfes:
            path = DEST / f"{model.replace(':', '-')}-nfe{nfe}.json"
            d = json.loads(path.read_text())
            old = d["meta"]["check"]["sliced_w2"]
            d["meta"]["check"] = recorded_check(model, AdaSDECoefficients.load(path), num=d["meta"]["check"]["num_samples"])
            atomic_write(path, json.dumps(d, indent=2).encode())
            print(f"{path.name}: sliced_w2 {old:.6g} -> {d['meta']['check']['sliced_w2']:.6g}", flush=True)


if __name__ == "__main__":
    main()
