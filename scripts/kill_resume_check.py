"""Kill `erkguid generate`, `train` and `distill` at random moments (SIGKILL), resume, compare byte for byte.

For each job: one uninterrupted run (the reference), then the same run started again and again in a fresh
folder, each start SIGKILLed at a random point of the job, until ``--kills`` kills have landed; a last start
runs to the end. Kill points: p_i ~ 0.95 U(i / kills, (i + 1) / kills) of the job's progress (sample files
written, checkpointed step, checkpointed iteration); start i is killed once its progress passed p_i, after
U(0, 50 ms) more, or (every other kill) at the moment a temp file appears, i.e. inside a write. The final
files must equal the reference byte for byte:

* generate: every file in the output folder (samples, generate.json, the lock file); stale temp files of
  killed runs are removed by the next run, so none may remain.
* train: ``checkpoint.safetensors`` (net, EMA, Adam state, step, losses, settings). Train uses 2000 seeded
  points as data (what is tested is the checkpointing).
* distill: the checkpoint JSON without its ``seconds`` entry (wall time): coefficients, Adam state, loss
  history and iteration count.

A kill "inside a write" is one that left a new temp file behind (``*.erkguid-tmp``): the process died
between creating its temp file and renaming it. Usage (prints and saves JSON)::

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

# `erkguid generate` with each batch slowed by 20 ms (patched in the child: production code has no test hooks)
SLOW_GENERATE = ("import sys, time; import erkguid.generate as g; s = g.sample_seeds\n"
                 "def slow(*a, **k):\n    out = s(*a, **k); time.sleep(0.02); return out\n"
                 "g.sample_seeds = slow; sys.argv = ['erkguid', *sys.argv[1:]]\n"
                 "from erkguid._console import main; main()")
GENERATE = ["-c", SLOW_GENERATE, "generate", "--model", "digits64", "--seeds", "0-159", "--steps", "6", "--batch", "8",
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


def _kill_loop(args: list[str], ready: Callable[[], bool], reset: Callable[[], None], folder: Path, kills: int,
               rng: random.Random, progress: Callable[[], float], in_writes: bool = True,
               span: float = 0.95) -> list[dict[str, Any]]:
    """Start ``args`` repeatedly and SIGKILL start i once the job's progress (0..1) passed
    p_i ~ span * U(i / kills, (i + 1) / kills), plus U(0, 50 ms) (``span`` < 1 leaves the last kill room to land);
    with ``in_writes``, every other kill instead waits for a new temp file in ``folder`` (a file being written) and
    kills at once. Stops early if a start runs to the end."""
    log: list[dict[str, Any]] = []
    targets = [span * (i + rng.random()) / kills for i in range(kills)]  # one random point in each 1/kills of the span
    while len(log) < kills:
        reset()
        target, aim = targets[len(log)], in_writes and len(log) % 2 == 1
        seen = set(_temps(folder)) if folder.is_dir() else set()
        proc, _ = _start(args, ready)
        while proc.poll() is None and progress() < target:
            time.sleep(0.002)
        t0, extra = time.perf_counter(), rng.uniform(0.0, 0.05)
        while proc.poll() is None and (time.perf_counter() - t0 < extra if not aim else not set(_temps(folder)) - seen):
            pass
        if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
            _finish(proc)
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        temps = _temps(folder) if folder.is_dir() else []
        log.append({"target_progress": round(target, 3), "progress_at_kill": round(progress(), 3), "aimed_at_a_write": aim,
                    "inside_write": bool(set(temps) - seen), "temp_files": len(temps)})
    return log


def _lock_held(out: Path) -> Callable[[], bool]:
    lock = out / ".generate.lock"
    return lambda: lock.exists() and lock.stat().st_size > 0


def check_generate(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "gen-ref", root / "gen-killed"
    _run([*GENERATE, "--out", str(ref)])
    total = sum(1 for p in ref.rglob("*.npz"))

    def progress() -> float:
        return sum(1 for p in out.glob("*/*.npz")) / total

    log = _kill_loop([*GENERATE, "--out", str(out)], _lock_held(out), lambda: None, out, kills,
                     rng, progress)
    last = json.loads(_run([*GENERATE, "--out", str(out)]).stdout.strip().splitlines()[-1])
    a, b = _files(ref), _files(out)
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "files": len(a),
            "identical": a == b, "differing": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))[:10],
            "stale_temps_after_resume": _temps(out), "last_run": last, "kill_log": log}


def _flag(root: Path, name: str) -> tuple[Path, Callable[[], bool], Callable[[], None]]:
    f = root / f"{name}.ready"
    return f, f.exists, lambda: f.unlink(missing_ok=True)


def _train_step(ckpt: Path) -> int:
    """The step recorded in a training checkpoint's safetensors header (0 if there is none yet)."""
    try:
        with ckpt.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        return int(json.loads(header["__metadata__"]["erkguid"])["step"])
    except (OSError, ValueError, KeyError):
        return 0


def check_train(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "train-ref", root / "train-killed"
    flag, ready, reset = _flag(root, "train")
    _run(["-c", TRAIN, str(ref), str(flag)])
    steps = _train_step(ref / "checkpoint.safetensors")
    log = _kill_loop(["-c", TRAIN, str(out), str(flag)], ready, reset, out, kills, rng,
                     lambda: _train_step(out / "checkpoint.safetensors") / steps)
    _run(["-c", TRAIN, str(out), str(flag)])
    a, b = (p / "checkpoint.safetensors" for p in (ref, out))
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "steps": steps,
            "identical": a.read_bytes() == b.read_bytes(), "sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
            "stale_temps_after_resume": _temps(out), "kill_log": log}


def _distill_state(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    d.pop("seconds")
    return d


def check_distill(root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    ref, out = root / "distill-ref" / "ckpt.json", root / "distill-killed" / "ckpt.json"
    flag, ready, reset = _flag(root, "distill")
    _run(["-c", DISTILL, str(ref), str(flag)])
    iters = _distill_state(ref)["iteration"]

    def progress() -> float:
        try:
            return _distill_state(out)["iteration"] / iters
        except (OSError, ValueError, KeyError):
            return 0.0

    log = _kill_loop(["-c", DISTILL, str(out), str(flag)], ready, reset, out.parent, kills, rng, progress)
    _run(["-c", DISTILL, str(out), str(flag)])
    a, b = _distill_state(ref), _distill_state(out)
    return {"kills": len(log), "kills_inside_a_write": sum(k["inside_write"] for k in log), "identical": a == b,
            "iterations": iters, "stale_temps_after_resume": _temps(out.parent), "kill_log": log}


CHECKS = {"generate": check_generate, "train": check_train, "distill": check_distill}


def format_table(res: dict[str, Any]) -> str:
    """docs/safety.md's table: per job, the kills, how many landed inside a write, the progress at the kills, what was
    compared, whether the resumed result is byte-identical and how many temp files were left."""
    compared = {
        "generate": lambda r: f"every file of the folder ({r['files']} files: samples, generate.json, lock file)",
        "train": lambda r: f"`checkpoint.safetensors` ({r['steps']} steps, checkpoint every step)",
        "distill": lambda r: f"checkpoint JSON minus `seconds` ({r['iterations']} iterations, checkpoint every iteration)",
    }
    lines = ["| job | kills | inside a write | progress at the kills | compared | byte-identical | temp files left |",
             "|---|---|---|---|---|---|---|"]
    for job in (j for j in CHECKS if j in res):
        r = res[job]
        at = [k["progress_at_kill"] for k in r["kill_log"]]
        lines.append(f"| {job} | {r['kills']} | {r['kills_inside_a_write']} | {min(at):.2f}-{max(at):.2f} | "
                     f"{compared[job](r)} | {'yes' if r['identical'] else 'NO'} | {len(r['stale_temps_after_resume'])} |")
    return "\n".join(lines)


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
    print(format_table(res))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
