"""Try every file / CLI fault class of issue 11 (items 1-6, file and CLI part of 8) and classify the answer.

Outcomes: ``clear`` (a handled error that names the argument, option or file), ``unclear`` (a traceback from
deep inside a library, or an error that names nothing), ``silent`` (accepted, or a wrong result without a
word), ``data-loss`` (a user's file deleted or a checkpoint lost), ``code-exec`` (a planted payload ran).
Runs against whatever ``erkguid`` is importable, so the same script measures the code before and after a
change::

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/safety_probe.py --out runs/safety_probe_after.json
    git archive <old commit> src | tar -x -C /tmp/old && \\
        OMP_NUM_THREADS=1 PYTHONPATH=/tmp/old/src python scripts/safety_probe.py --out runs/safety_probe_before.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/_helpers.py: the fake EDM checkout

GEN = ["generate", "--model", "tree2d", "--seeds", "0-7", "--steps", "3", "--batch", "4", "--quiet"]
PROBES: list[tuple[str, str, Callable[[Path], dict[str, Any]]]] = []


def probe(item: str, name: str):
    def deco(fn):
        PROBES.append((item, name, fn))
        return fn
    return deco


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli(*args: Any) -> Any:
    from erkguid.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def judge(r: Any, names: str, should_fail: bool = True) -> dict[str, Any]:
    """``clear`` when the command failed through click with a message containing ``names``."""
    out = " ".join(r.output.split())
    if r.exit_code == 0:
        return {"outcome": "silent" if should_fail else "ok", "detail": out[-200:]}
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return {"outcome": "unclear", "detail": f"{type(r.exception).__name__}: {str(r.exception)[:200]}"}
    return {"outcome": "clear" if names in out else "unclear", "detail": out[-300:]}


def judge_call(fn: Callable[[], Any], names: str) -> dict[str, Any]:
    try:
        fn()
    except (ValueError, TypeError, FileNotFoundError) as e:
        msg = " ".join(str(e).split())
        return {"outcome": "clear" if names in msg else "unclear", "detail": f"{type(e).__name__}: {msg[:300]}"}
    except BaseException as e:  # noqa: BLE001 - classifying every answer is the point
        return {"outcome": "unclear", "detail": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
    return {"outcome": "silent", "detail": "accepted"}


# ------------------------------------------------------------------------------------------- item 1
@probe("1", "generate: user's *.partial files and a symlinked folder's *.partial in --out")
def _(t: Path) -> dict[str, Any]:
    out, elsewhere = t / "out", t / "downloads"
    out.mkdir()
    elsewhere.mkdir()
    (out / "report.partial").write_text("mine")
    (elsewhere / "big.iso.partial").write_text("download")
    (out / "linked").symlink_to(elsewhere, target_is_directory=True)
    cli(*GEN, "--out", out)
    lost = [p.name for p in (out / "report.partial", elsewhere / "big.iso.partial") if not p.exists()]
    return {"outcome": "data-loss" if lost else "ok", "detail": f"deleted: {lost}"}


@probe("1", "generate: folder with sample files but no generate.json")
def _(t: Path) -> dict[str, Any]:
    (t / "o" / "000000").mkdir(parents=True)
    (t / "o" / "000000" / "000001.npz").write_bytes(b"someone else's")
    return judge(cli(*GEN, "--out", t / "o"), "no generate.json")


# ------------------------------------------------------------------------------------------- item 2
@probe("2", "generate: two identical runs started into one folder at once (subprocesses)")
def _(t: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "erkguid", *GEN[:4], "0-11", *GEN[5:], "--out", str(t / "o"), "--sleep-per-batch", "6"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (t / "o" / "generate.json").exists():
        time.sleep(0.01)
    second = subprocess.run(cmd[:-2], env=env, capture_output=True, text=True, timeout=300)
    first.wait(300)
    msg = " ".join(second.stderr.split())[-200:]
    if second.returncode != 0 and "in use by another" in second.stderr:
        return {"outcome": "clear", "detail": msg}
    if second.returncode != 0 or first.returncode != 0:
        return {"outcome": "unclear", "detail": f"rc {first.returncode}/{second.returncode}: {msg}"}
    return {"outcome": "silent", "detail": "both ran into the same folder at once, unlocked: " + second.stdout.strip()[-160:]}


# ------------------------------------------------------------------------------------------- item 3
for _opt, _val in (("--w-stiff", "-1"), ("--scaling", "bogus"), ("--device", "bogus")):
    def _bad(t: Path, opt: str = _opt, val: str = _val) -> dict[str, Any]:
        r = cli(*GEN, "--out", t / "o", opt, val)
        wrote = (t / "o" / "generate.json").exists()
        res = judge(r, opt.lstrip("-").replace("-", "_") if opt != "--device" else "bogus")
        if wrote:
            again = cli(*GEN, "--out", t / "o")
            res = {"outcome": "silent", "detail": f"wrote generate.json before failing; corrected rerun exit {again.exit_code}: "
                                                  + " ".join(again.output.split())[-120:]}
        return res
    probe("3", f"generate {_opt} {_val}: validated before touching --out")(_bad)


# ------------------------------------------------------------------------------------------- item 4
def _tiny_cfg(steps: int = 4):
    from erkguid.training.edm import TrainConfig

    return TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "num_classes": 2, "emb": 4},
                       steps=steps, batch=16, lr=1e-3, ckpt_every=2, note="probe")


def _small_data() -> None:
    from erkguid.training import edm

    g = torch.Generator().manual_seed(0)
    data = (torch.randn(500, 2, generator=g), torch.randint(0, 2, (500,), generator=g))
    edm.load_data = lambda name, seed=0: data


@probe("4", "train: process dies in the middle of writing its checkpoint, then resumes")
def _(t: Path) -> dict[str, Any]:
    from erkguid.training import edm

    _small_data()
    edm.train("p", t, config=_tiny_cfg(), progress=False, until=2)
    real_save, real_replace = torch.save, os.replace

    def half_save(obj, f, *a, **k):  # writes half the bytes into the target, then the process dies
        buf = io.BytesIO()
        real_save(obj, buf, *a, **k)
        if isinstance(f, str | Path):
            Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise KeyboardInterrupt
        f.write(buf.getvalue())

    def die_before_rename(*a):
        raise KeyboardInterrupt

    torch.save, os.replace = half_save, die_before_rename
    try:
        edm.train("p", t, config=_tiny_cfg(), progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        torch.save, os.replace = real_save, real_replace
    try:
        res = edm.train("p", t, config=_tiny_cfg(), progress=False)
    except Exception as e:  # noqa: BLE001
        return {"outcome": "data-loss", "detail": f"checkpoint lost; resume: {type(e).__name__}: {str(e)[:160]}"}
    return {"outcome": "ok", "detail": f"previous checkpoint intact; resumed to step {res.steps}"}


# ------------------------------------------------------------------------------------------- item 5
@probe("5", "sample --preset naming edm:PKL::SRC with a planted payload")
def _(t: Path) -> dict[str, Any]:
    from tests._helpers import make_edm_checkout

    src, _, _ = make_edm_checkout(t)
    pkl, marker = t / "shared.pkl", t / "pwned"
    pkl.write_bytes(pickle.dumps({"ema": Payload(marker)}))
    preset = t / "shared.json"
    preset.write_text(json.dumps({"model": f"edm:{pkl}::{src}", "solver": "heun", "steps": 4, "w_stiff": 0.0, "w_con": 0.0,
                                  "scaling": "z2"}))
    r = cli("sample", "--preset", preset, "--out", t / "s.npz", "--num-samples", "2", "--quiet")
    if marker.exists():
        return {"outcome": "code-exec", "detail": "payload ran"}
    return judge(r, "--allow-pickle")


@probe("5", "train resumes a checkpoint.pt holding a planted payload")
def _(t: Path) -> dict[str, Any]:
    from erkguid.training import edm

    _small_data()
    marker = t / "pwned"
    bad = {"net": {}, "ema": {}, "opt": {}, "losses": [], "step": 0, "config": {}, "x": Payload(marker)}
    torch.save(bad, t / "checkpoint.pt")
    res = judge_call(lambda: edm.train("p", t, config=_tiny_cfg(), progress=False), "checkpoint.pt")
    return {"outcome": "code-exec", "detail": "payload ran"} if marker.exists() else res


# ------------------------------------------------------------------------------------------- item 6
@probe("6", "gmm: npz whose headers declare 29 GB (zip bomb)")
def _(t: Path) -> dict[str, Any]:
    bomb = t / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, shape in (("weights", (4,)), ("means", (4, 30000)), ("covs", (4, 30000, 30000))):
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
            zf.writestr(f"{name}.npy", buf.getvalue() + (b"\0" * 32 if name == "weights" else b""))
    return judge(cli(*GEN[:2], f"gmm:{bomb}", *GEN[3:], "--out", t / "o"), "bomb.npz")


@probe("6", "generate --seeds 0-99999999999 (under a 2 GB data limit)")
def _(t: Path) -> dict[str, Any]:
    code = ("import resource; resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30)); import sys; "
            "from erkguid.cli import main; sys.argv = ['erkguid', 'generate', '--model', 'tree2d', '--seeds', "
            f"'0-99999999999', '--out', {str(t / 'o')!r}]; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    err = " ".join(r.stderr.split())
    if r.returncode != 0 and "Traceback" not in r.stderr and "seeds" in err:
        return {"outcome": "clear", "detail": err[-200:]}
    return {"outcome": "unclear", "detail": err[-200:]}


@probe("6", "sample --preset with 100k-deep JSON")
def _(t: Path) -> dict[str, Any]:
    (t / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return judge(cli("sample", "--preset", t / "deep.json", "--out", t / "s.npz"), "deep.json")


# ------------------------------------------------------------------------------------------- item 8 (files, CLI)
@probe("8", "generate --device cuda without CUDA")
def _(t: Path) -> dict[str, Any]:
    if torch.cuda.is_available():
        return {"outcome": "n/a", "detail": "CUDA is available here"}
    return judge(cli(*GEN, "--out", t / "o", "--device", "cuda"), "cuda")


@probe("8", "sample --out /proc/x.npz")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("sample", "--model", "tree2d", "--steps", "2", "--num-samples", "2", "--out", "/proc/x.npz", "--quiet"),
                 "/proc/x.npz")


@probe("8", "generate-bench --solvers nosuch")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("generate-bench", "--solvers", "nosuch", "--out", t / "b", "--quiet", "--repeats", "1", "--batch", "2",
                     "--size", "8", "--steps", "2"), "--solvers")


@probe("8", "generate-bench --repeats 0")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("generate-bench", "--repeats", "0", "--out", t / "b", "--quiet", "--batch", "2", "--size", "8",
                     "--steps", "2"), "--repeats")


@probe("8", "adasde-eval --nfes 4")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("adasde-eval", "--nfes", "4", "--models", "tree2d", "--seeds", "2", "--iters", "1", "--batch", "4",
                     "--num-samples", "64", "--out", t / "e", "--quiet"), "--nfes")


@probe("8", "tune --solver bogus")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("tune", "tree2d-exact", "--solver", "bogus", "--out", t / "p.json", "--quiet"), "--solver")


@probe("8", "tune --nfe 2")
def _(t: Path) -> dict[str, Any]:
    return judge(cli("tune", "tree2d-exact", "--nfe", "2", "--out", t / "p.json", "--quiet"), "--nfe")


@probe("8", "sample --model diffusers:<a pipeline's vae/ folder>")
def _(t: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(4,), norm_num_groups=2, latent_channels=2).save_pretrained(t / "vae")
    (t / "scheduler").mkdir()  # the pipeline layout: vae/, scheduler/, unet/
    (t / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDPMScheduler",
                                                                         "prediction_type": "epsilon"}))
    r = cli("sample", "--model", f"diffusers:{t / 'vae'}", "--steps", "2", "--num-samples", "2", "--out", t / "s.npz", "--quiet")
    return judge(r, "vae")


@probe("8", "sample --preset with corrupt JSON")
def _(t: Path) -> dict[str, Any]:
    (t / "p.json").write_text('{"model": ')
    return judge(cli("sample", "--preset", t / "p.json", "--out", t / "s.npz"), "p.json")


@probe("8", "generate --model gmm:<truncated npz>")
def _(t: Path) -> dict[str, Any]:
    buf = io.BytesIO()
    np.savez(buf, weights=np.ones(2) / 2, means=np.zeros((2, 2)), covs=np.ones((2, 2)))
    (t / "g.npz").write_bytes(buf.getvalue()[:100])
    return judge(cli(*GEN[:2], f"gmm:{t / 'g.npz'}", *GEN[3:], "--out", t / "o"), "g.npz")


@probe("8", "AdaSDECoefficients.load(<truncated .safetensors>)")
def _(t: Path) -> dict[str, Any]:
    from erkguid.solvers.adasde_coeffs import AdaSDECoefficients, shipped

    p = shipped("tree2d-nfe3").save(t / "c.safetensors")
    p.write_bytes(p.read_bytes()[:40])
    return judge_call(lambda: AdaSDECoefficients.load(p), "c.safetensors")


@probe("8", "train --ship into a folder with a corrupt manifest.json")
def _(t: Path) -> dict[str, Any]:
    from erkguid.training import edm

    _small_data()
    res = edm.train("p", None, config=_tiny_cfg(2), progress=False)
    (t / "manifest.json").write_text("{oops")
    return judge_call(lambda: edm.ship(res, t), "manifest.json")


@probe("8", "generate into a folder whose generate.json is corrupt")
def _(t: Path) -> dict[str, Any]:
    (t / "o").mkdir()
    (t / "o" / "generate.json").write_text('{"settings": ')
    return judge(cli(*GEN, "--out", t / "o"), "generate.json")


@probe("8", 'sample --preset with "steps": 6.7')
def _(t: Path) -> dict[str, Any]:
    (t / "p.json").write_text(json.dumps({"model": "tree2d", "solver": "heun", "steps": 6.7, "w_stiff": 0.0, "w_con": 0.0,
                                          "scaling": "z2"}))
    return judge(cli("sample", "--preset", t / "p.json", "--out", t / "s.npz", "--quiet"), "steps")


@probe("8", "train resumed with another --steps")
def _(t: Path) -> dict[str, Any]:
    from erkguid.training import edm

    _small_data()
    edm.train("p", t, config=_tiny_cfg(4), progress=False, until=2)
    return judge_call(lambda: edm.train("p", t, config=_tiny_cfg(4), steps=6, progress=False), "steps")


@probe("8", "generate rerun with everything done: strict JSON on stdout")
def _(t: Path) -> dict[str, Any]:
    cli(*GEN, "--out", t / "o")
    r = cli(*GEN, "--out", t / "o")
    line = r.output.strip().splitlines()[-1]
    try:
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError as e:
        return {"outcome": "silent", "detail": f"non-strict JSON ({e}): {line[-80:]}"}
    return {"outcome": "ok", "detail": line[-80:]}


@probe("8", "sample --out a: reports the path it wrote")
def _(t: Path) -> dict[str, Any]:
    cwd = os.getcwd()
    os.chdir(t)
    try:
        r = cli("sample", "--model", "tree2d", "--steps", "2", "--num-samples", "2", "--out", "a", "--quiet")
    finally:
        os.chdir(cwd)
    reported = r.output.strip().splitlines()[-1]
    ok = (t / "a").is_file() and reported.startswith("wrote a ")
    return {"outcome": "ok" if ok else "silent", "detail": f"{reported!r}; files: {sorted(p.name for p in t.iterdir())}"}


@probe("8", "generate --sigma-max 1e300")
def _(t: Path) -> dict[str, Any]:
    return judge(cli(*GEN, "--out", t / "o", "--sigma-max", "1e300"), "out of range")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/safety_probe.json"))
    a = ap.parse_args()
    import erkguid

    rows = []
    for item, name, fn in PROBES:
        with tempfile.TemporaryDirectory() as d:
            try:
                res = fn(Path(d))
            except BaseException as e:  # noqa: BLE001
                res = {"outcome": "unclear", "detail": f"probe raised {type(e).__name__}: {e}"[:300],
                       "trace": traceback.format_exc()[-500:]}
        rows.append({"item": item, "class": name, **res})
        print(f"[{item}] {name}: {res['outcome']} - {res['detail'][:150]}", flush=True)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    out = {"erkguid": erkguid.__file__, "classes": len(rows), "counts": counts, "rows": rows}
    print(json.dumps(counts))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
