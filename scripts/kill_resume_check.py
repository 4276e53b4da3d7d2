"""Kill `erkguid generate`, `train` and `distill` at random moments (SIGKILL), resume, compare byte for byte.

For each job: one uninterrupted run (the reference), then the same run started again and again in a fresh
folder, each start killed with SIGKILL after a random delay, until ``--kills`` kills have landed; a last
start runs to the end. The final files must equal the reference byte for byte:

* generate: every file in the output folder (samples, generate.json, the lock file); stale temp files of
  killed runs are removed by the next run, so none may remain.
* train: ``checkpoint.safetensors`` (net, EMA, Adam state, step, losses, settings).
* distill: the checkpoint JSON without its ``seconds`` entry (wall time) - coefficients, Adam state,
  loss history and iteration count.

Each kill lands U(0, 1.6 * W / kills) seconds after the job started working (generate: holds its folder
lock; train / distill: past imports), W being the reference run's working time, so the kills are spread
over the whole run. Train uses 2000 seeded points as data (what is tested is the checkpointing). Every
other kill then also waits for a temp file to appear (a sample or checkpoint being written) and kills
at once (aimed at a write). A kill "inside a write" is one that left a new temp file behind
(``*.erkguid-tmp``): the process died between creating its temp file and renaming it. Usage (prints and saves JSON)::

    OMP_NUM_THREADS=1 python scripts/kill_resume_check.py --kills 20 --out runs/kill_resume_check.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
TMP = ".erkguid-tmp"

GENERATE = ["-m", "erkguid", "generate", "--model", "digits64", "--seeds", "0-159", "--steps", "6", "--batch", "8",
            "--dtype", "float64", "--w-stiff", "1", "--w-con", "0.1", "--quiet"]
TRAIN = """
import sys, pathlib, torch
from erkguid.training import edm
from erkguid.training.edm import TrainConfig, train
g = torch.Generator().manual_seed(0)
data = (torch.randn(2000, 2, generator=g), torch.randint(0, 2, (2000,), generator=g))
edm.load_data = lambda name, seed=0: data
pathlib.Path(sys.argv[2]).touch()
cfg = TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 32, "depth": 2, "num_classes": 2, "emb": 8},
                  steps=120, batch=64, lr=1e-3, ckpt_every=1, note="kill test")
train("kill", sys.argv[1], config=cfg, progress=False)
"""
DISTILL = """
import sys
from erkguid.models import tree_2d
from erkguid.training.adasde import DistillConfig, distill_adasde
import pathlib
pathlib.Path(sys.argv[2]).touch()
distill_adasde(tree_2d(), DistillConfig(nfe=3, iters=60, batch=16), checkpoint=sys.argv[1], checkpoint_every=1,
               resume=True, progress=False)
"""


def _temps(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(f"*{TMP}"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stderr[-2000:]}")
    return done


def _start(args: list[str], ready: Callable[[], bool]) -> tuple[subprocess.Popen, float]:
    """Start ``args``; return the process and the time it became ready (working), or the time it ended."""
    proc = subprocess.Popen([sys.executable, *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while proc.poll() is None and not ready():
        time.sleep(0.002)
    return proc, time.perf_counter()


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(err.decode()[-2000:])
    return out.decode()


def _reference(args: list[str], ready: Callable[[], bool]) -> float:
    """Run ``args`` to the end; its working time (from ready to exit)."""
    proc, t0 = _start(args, ready)
    _finish(proc)
    return time.perf_counter() - t0


def _kill_loop(args: list[str], ready: Callable[[], bool], reset: Callable[[], None], folder: Path, kills: int,
               rng: random.Random, work: float, in_writes: bool = False) -> list[dict[str, Any]]:
    """Start ``args`` repeatedly, SIGKILL each start U(0, 1.6 work / kills) s after it is ready, until ``kills`` kills
    landed or a start ran to the end. ``in_writes``: every other kill then also waits for a new temp file in
    ``folder`` (a checkpoint being written) and kills at once."""
    log: list[dict[str, Any]] = []
    while len(log) < kills:
        reset()
        delay = rng.uniform(0.0, 1.6 * work / kills)
        aim = in_writes and len(log) % 2 == 1
        seen = set(_temps(folder)) if folder.is_dir() else set()
        proc, t0 = _start(args, ready)
        while proc.poll() is None and time.perf_counter() - t0 < delay:
            time.sleep(0.001)
        while aim and proc.poll() is None and not (folder.is_dir() and set(_temps(folder)) - seen):
            pass
        if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
            _finish(proc)
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        temps = _temps(folder) if folder.is_dir() else []
        done = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(TMP)) if folder.is_dir() else 0
        log.append({"delay_s": round(delay, 4), "aimed_at_a_write": aim, "inside_write": bool(set(temps) - set(seen)),
                    "temp_files": len(temps), "complete_files": done})
    return log


def _lock_held(out: Path) -> Callable[[], bool]:
    lock = out / ".generate.lock"
    return lambda: lock.exists() and lock.stat().st_size > 0


def check_generate(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "gen-ref", root / "gen-killed"
    work = _reference([*GENERATE, "--out", str(ref), "--sleep-per-batch", "0.02"], _lock_held(ref))
    log = _kill_loop([*GENERATE, "--out", str(out), "--sleep-per-batch", "0.02"], _lock_held(out), lambda: None, out, kills,
                     rng, work, in_writes=True)
    last = json.loads(_run([*GENERATE, "--out", str(out)]).stdout.strip().splitlines()[-1])
    a, b = _files(ref), _files(out)
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "files": len(a),
            "work_seconds": round(work, 2), "identical": a == b,
            "differing": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:10],
            "stale_temps_after_resume": _temps(out), "last_run": last, "kill_log": log}


def _flag(root: Path, name: str) -> tuple[Path, Callable[[], bool], Callable[[], None]]:
    f = root / f"{name}.ready"
    return f, f.exists, lambda: f.unlink(missing_ok=True)


def check_train(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "train-ref", root / "train-killed"
    flag, ready, reset = _flag(root, "train")
    work = _reference(["-c", TRAIN, str(ref), str(flag)], ready)
    log = _kill_loop(["-c", TRAIN, str(out), str(flag)], ready, reset, out, kills, rng, work, in_writes=True)
    _run(["-c", TRAIN, str(out), str(flag)])
    a, b = (p / "checkpoint.safetensors" for p in (ref, out))
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "work_seconds": round(work, 2),
            "identical": a.read_bytes() == b.read_bytes(), "sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
            "stale_temps_after_resume": _temps(out), "kill_log": log}


def _distill_state(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    d.pop("seconds")
    return d


def check_distill(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "distill-ref" / "ckpt.json", root / "distill-killed" / "ckpt.json"
    flag, ready, reset = _flag(root, "distill")
    work = _reference(["-c", DISTILL, str(ref), str(flag)], ready)
    log = _kill_loop(["-c", DISTILL, str(out), str(flag)], ready, reset, out.parent, kills, rng, work, in_writes=True)
    _run(["-c", DISTILL, str(out), str(flag)])
    a, b = _distill_state(ref), _distill_state(out)
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "work_seconds": round(work, 2),
            "identical": a == b, "iterations": a["iteration"], "stale_temps_after_resume": _temps(out.parent),
            "kill_log": log}


CHECKS = {"generate": check_generate, "train": check_train, "distill": check_distill}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="kills per job")
    ap.add_argument("--jobs", default="generate,train,distill")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    ap.add_argument("--out", type=Path, default=Path("runs/kill_resume_check.json"))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    res: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "kills_per_job": a.kills, "seed": a.seed}
    root = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    try:
        for job in a.jobs.split(","):
            t0 = time.perf_counter()
            res[job] = CHECKS[job](root, a.kills, rng)
            res[job]["seconds"] = round(time.perf_counter() - t0, 1)
            r = res[job]
            print(f"{job}: {r['kills']} kills ({r['kills_inside_a_write']} inside a write), resumed result identical "
                  f"byte for byte: {r['identical']} ({r['seconds']} s)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
