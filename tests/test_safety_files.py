"""Safety of files and the command line (issue 11, items 1-6 and the file/CLI part of 8).

Each test names the class of bad input or fault it covers; each failed on the code before the fix
(see docs/safety.md for the before -> after table).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erkguid import _io
from erkguid import generate as gen
from erkguid.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
GEN = ["generate", "--model", "tree2d", "--seeds", "0-7", "--steps", "3", "--batch", "4", "--quiet"]


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and not p.is_symlink()}


class Payload:
    """Unpickling this writes ``marker``: stands in for attacker code hidden in a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- 1. never delete what we did not create
def test_generate_leaves_user_partial_files_and_symlinked_folders_alone(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "downloads"
    out.mkdir()
    elsewhere.mkdir()
    (out / "report.partial").write_text("user's file")
    (elsewhere / "big.iso.partial").write_text("a download in progress")
    (out / "linked").symlink_to(elsewhere, target_is_directory=True)
    r = _invoke(*GEN, "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "report.partial").read_text() == "user's file"
    assert (elsewhere / "big.iso.partial").read_text() == "a download in progress"
    assert len(list(out.glob("*/*.npz"))) == 8


def test_generate_refuses_sample_files_without_metadata(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "000000").mkdir(parents=True)
    (out / "000000" / "000001.npz").write_bytes(b"someone else's sample")
    r = _invoke(*GEN, "--out", out)
    assert r.exit_code != 0 and "holds seed folders (000000) but no generate.json" in r.output
    assert (out / "000000" / "000001.npz").read_bytes() == b"someone else's sample"
    assert not (out / gen.METADATA).exists()


def test_atomic_write_only_touches_its_own_temp_and_fsyncs(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    (tmp_path / "a.bin.partial").write_bytes(b"user")  # the temp name generate used before: not ours any more
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    _io.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and (tmp_path / "a.bin.partial").read_bytes() == b"user"
    assert len(synced) == 2  # the file, then its folder

    def boom(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=f"cannot write {target}"):
        _io.atomic_write(target, boom)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.bin.partial"]  # its temp file is gone, no other


def test_dead_writers_temps_are_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.safetensors"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".checkpoint.safetensors.{int(child.stdout)}-0123456789abcdef{_io.TMP_SUFFIX}"
    alive = tmp_path / f".checkpoint.safetensors.{os.getpid()}-0123456789abcdef{_io.TMP_SUFFIX}"
    other = tmp_path / f".other.bin.{int(child.stdout)}-0123456789abcdef{_io.TMP_SUFFIX}"
    mine = tmp_path / "checkpoint.safetensors.partial"
    for p in (dead, alive, other, mine):
        p.write_bytes(b"x")
    assert _io.remove_dead_temps(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other, mine))


# --------------------------------------------------------------------------- 2. one run per folder
def _gen_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "erkguid", "generate", "--model", "tree2d", "--seeds", "0-11", "--out", str(out),
            "--steps", "3", "--batch", "4", "--quiet", *extra]


def test_two_concurrent_runs_into_one_folder(tmp_path: Path, monkeypatch) -> None:
    """This process runs generate (paused after its first batch); two real subprocesses start into the same
    folder meanwhile, one with the same settings and one with other settings."""
    import threading

    ref = tmp_path / "ref"
    settings = gen.Settings(model="tree2d", steps=3, batch_size=4)
    gen.generate(ref, settings, "0-11", progress=False)
    out = tmp_path / "out"
    go = threading.Event()
    orig, calls = gen.sample_seeds, [0]

    def paused(*args, **kwargs):  # the first run pauses before its second batch until the subprocesses are done
        calls[0] += 1
        if calls[0] == 2:
            go.wait(120)
        return orig(*args, **kwargs)

    monkeypatch.setattr(gen, "sample_seeds", paused)
    first = threading.Thread(target=gen.generate, args=(out, settings, "0-11"), kwargs={"progress": False})
    first.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "000000" / "000003.npz").exists():
            go.wait(0.02)
        procs = [subprocess.Popen(_gen_cmd(out, *extra), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for extra in ((), ("--w-stiff", "2"))]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    finally:
        go.set()
        first.join(120)
    for rc, err in results:
        assert rc != 0 and "is in use by another erkguid generate" in err, err
    assert _files(out) == _files(ref)  # the first run's files only, identical to a run alone
    with pytest.raises(ValueError, match="holds a run with different settings"):
        gen.generate(out, gen.Settings(model="tree2d", steps=3, batch_size=4, w_stiff=2.0), "0-11", progress=False)
    assert _files(out) == _files(ref)


def test_lock_is_taken_in_process_too(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    with _io.folder_lock(out, gen.LOCK, what="erkguid generate"):
        with pytest.raises(OSError, match="in use by another erkguid generate"):
            gen.generate(out, gen.Settings(model="tree2d", steps=3), "0-3", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [gen.LOCK]


# --------------------------------------------------------------------------- 3. validate before touching the disk
@pytest.mark.parametrize("bad, msg", [(("--w-stiff", "-1"), "w_stiff must be a finite number >= 0"),
                                      (("--w-stiff", "nan"), "w_stiff must be a finite number"),
                                      (("--scaling", "z3"), "scaling must be one of"),
                                      (("--device", "bogus"), "device 'bogus' is not a torch device"),
                                      (("--solver", "nosuch"), "nosuch")])
def test_bad_setting_writes_nothing_and_the_corrected_rerun_works(tmp_path: Path, bad, msg: str) -> None:
    out = tmp_path / "out"
    r = _invoke(*GEN, "--out", out, *bad)
    assert r.exit_code != 0 and msg in r.output, r.output
    assert not out.exists()
    assert _invoke(*GEN, "--out", out).exit_code == 0


def test_device_cuda_without_cuda_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = _invoke(*GEN, "--out", tmp_path / "o", "--device", "cuda")
    assert r.exit_code != 0 and "CUDA is not available here" in r.output
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- 4. atomic checkpoints
def _tiny(steps: int = 6):
    from erkguid.training.edm import TrainConfig

    return TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "num_classes": 2, "emb": 8},
                       steps=steps, batch=32, lr=1e-3, ckpt_every=2, note="test")


@pytest.fixture
def small_data(monkeypatch):
    """Training data of 2000 seeded points instead of 100k exact tree2d samples (checkpoint tests need no more)."""
    from erkguid.training import edm

    g = torch.Generator().manual_seed(0)
    data = (torch.randn(2000, 2, generator=g), torch.randint(0, 2, (2000,), generator=g))
    monkeypatch.setattr(edm, "load_data", lambda name, seed=0: data)


@pytest.mark.usefixtures("small_data")
def test_train_checkpoint_write_failure_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    from erkguid.training.edm import train

    full = train("tiny", tmp_path / "a", config=_tiny(), progress=False)
    train("tiny", tmp_path / "b", config=_tiny(), progress=False, until=2)
    ckpt = tmp_path / "b" / "checkpoint.safetensors"
    before = ckpt.read_bytes()
    def killed_mid_write(src, dst):  # the temp file is complete, the process dies before the rename
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed_mid_write)
        with pytest.raises(KeyboardInterrupt):
            train("tiny", tmp_path / "b", config=_tiny(), progress=False, until=4)
    assert ckpt.read_bytes() == before and sorted(p.name for p in ckpt.parent.iterdir()) == [ckpt.name]
    resumed = train("tiny", tmp_path / "b", config=_tiny(), progress=False)
    assert all(torch.equal(v, w) for v, w in zip(full.net.state_dict().values(), resumed.net.state_dict().values()))
    assert (tmp_path / "a" / ckpt.name).read_bytes() == ckpt.read_bytes()  # same state, same bytes


@pytest.mark.usefixtures("small_data")
def test_legacy_pt_checkpoint_still_resumes(tmp_path: Path) -> None:
    """A checkpoint.pt as the previous version wrote it (torch.save of plain data) resumes through weights_only=True."""
    from erkguid.training.edm import _read_safetensors_checkpoint, train

    full = train("tiny", tmp_path / "a", config=_tiny(), progress=False)
    train("tiny", tmp_path / "b", config=_tiny(), progress=False, until=2)
    new = tmp_path / "b" / "checkpoint.safetensors"
    st = _read_safetensors_checkpoint(new)
    st["opt"]["param_groups"] = [{**g, "betas": tuple(g["betas"])} for g in st["opt"]["param_groups"]]
    torch.save(st, tmp_path / "b" / "checkpoint.pt")
    new.unlink()
    resumed = train("tiny", tmp_path / "b", config=_tiny(), progress=False)
    assert all(torch.equal(v, w) for v, w in zip(full.net.state_dict().values(), resumed.net.state_dict().values()))
    assert new.read_bytes() == (tmp_path / "a" / new.name).read_bytes()


@pytest.mark.usefixtures("small_data")
def test_train_resumed_with_other_steps_is_refused(tmp_path: Path) -> None:
    from erkguid.training.edm import train

    train("tiny", tmp_path, config=_tiny(6), progress=False, until=2)
    with pytest.raises(ValueError, match=r"different settings \(steps: 6 -> 8\)"):
        train("tiny", tmp_path, config=_tiny(6), steps=8, progress=False)


def test_distill_checkpoint_write_failure_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    from erkguid.models import tree_2d
    from erkguid.training.adasde import DistillConfig, distill_adasde

    cfg = DistillConfig(nfe=3, iters=4, batch=8)
    m = tree_2d()
    full = distill_adasde(m, cfg, checkpoint=tmp_path / "a.json", checkpoint_every=1, progress=False)
    ckpt = tmp_path / "b.json"
    distill_adasde(m, cfg, checkpoint=ckpt, checkpoint_every=1, stop_at=2, progress=False)
    before = ckpt.read_bytes()
    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            distill_adasde(m, cfg, checkpoint=ckpt, checkpoint_every=1, resume=True, stop_at=3, progress=False)
    assert ckpt.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    res = distill_adasde(m, cfg, checkpoint=ckpt, checkpoint_every=1, resume=True, progress=False)
    assert res.coefficients.to_dict()["raw"] == full.coefficients.to_dict()["raw"]
    assert json.loads(ckpt.read_text())["adam"] == json.loads((tmp_path / "a.json").read_text())["adam"]


# --------------------------------------------------------------------------- 5. no unpickling without opt-in
def test_preset_naming_an_edm_pickle_does_not_run_it(tmp_path: Path, edm_checkout) -> None:
    src, _, _ = edm_checkout
    marker = tmp_path / "pwned"
    pkl = tmp_path / "shared.pkl"
    pkl.write_bytes(pickle.dumps({"ema": Payload(marker)}))
    preset = tmp_path / "shared.json"
    preset.write_text(json.dumps({"model": f"edm:{pkl}::{src}", "solver": "heun", "steps": 4, "w_stiff": 0.0, "w_con": 0.0,
                                  "scaling": "z2", "allow_pickle": True}))
    r = _invoke("sample", "--preset", preset, "--out", tmp_path / "s.npz", "--num-samples", "2", "--quiet")
    assert r.exit_code != 0 and "--allow-pickle" in r.output and "runs any code" in r.output, r.output
    r = _invoke("generate", "--model", f"edm:{pkl}::{src}", "--seeds", "0-1", "--out", tmp_path / "g", "--quiet")
    assert r.exit_code != 0 and "--allow-pickle" in r.output
    with pytest.raises(ValueError, match="allow_pickle=True"):
        gen.resolve_model(f"edm:{pkl}::{src}")
    assert not marker.exists() and not (tmp_path / "g").exists()
    for cmd in ("sample", "generate"):
        assert "Unpickling runs any code the file holds" in " ".join(_invoke(cmd, "--help").output.split())


def test_allow_pickle_flag_loads_a_real_edm_pickle(tmp_path: Path, edm_checkout) -> None:
    src, pkl, _ = edm_checkout
    r = _invoke("sample", "--model", f"edm:{pkl}::{src}", "--allow-pickle", "--steps", "3", "--num-samples", "2",
                "--out", tmp_path / "s.npz", "--quiet")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "s.npz") as z:
        assert z["samples"].shape == (2, 1, 4, 4) and np.isfinite(z["samples"]).all()


@pytest.mark.usefixtures("small_data")
def test_malicious_training_checkpoint_does_not_run(tmp_path: Path) -> None:
    from erkguid.training.edm import train

    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    torch.save({"net": {}, "step": 0, "config": {}, "x": Payload(marker)}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint.pt holds objects other than tensors"):
        train("tiny", tmp_path / "run", config=_tiny(), progress=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- 6. bounded resources
def _npz_with_header(path: Path, arrays: dict[str, tuple[tuple[int, ...], bytes]]) -> None:
    """An .npz whose .npy headers declare ``shape`` but hold only ``data`` (a zip bomb's declared size, cheaply)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (shape, data) in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
            zf.writestr(f"{name}.npy", buf.getvalue() + data)


def test_gmm_zip_bomb_is_refused_before_allocating(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.npz"
    _npz_with_header(bomb, {"weights": ((4,), b"\0" * 32), "means": ((4, 30000), b""), "covs": ((4, 30000, 30000), b"")})
    with pytest.raises(ValueError, match=r"bomb.npz declares 28800960032 bytes of arrays .*limit is 268435456 bytes"):
        gen.resolve_model(f"gmm:{bomb}")


def test_corrupt_npz_named(tmp_path: Path) -> None:
    bad = tmp_path / "trunc.npz"
    good = io.BytesIO()
    np.savez(good, weights=np.ones(2) / 2, means=np.zeros((2, 2)), covs=np.ones((2, 2)))
    bad.write_bytes(good.getvalue()[:100])
    r = _invoke(*GEN[:2], f"gmm:{bad}", *GEN[3:], "--out", tmp_path / "o")
    assert r.exit_code != 0 and f"model file {bad} is not a readable .npz" in r.output
    obj = tmp_path / "obj.npz"
    np.savez(obj, weights=np.array([None, 1], dtype=object), means=np.zeros((2, 2)), covs=np.ones((2, 2)))
    with pytest.raises(ValueError, match="holds Python objects"):
        gen.resolve_model(f"gmm:{obj}")


def test_seed_ranges_are_capped_before_allocating() -> None:
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than 10000000 seeds"):
        gen.parse_seeds("0-99999999999")
    with pytest.raises(ValueError, match=r"more than 10000000 seeds"):
        gen.parse_seeds("0-5000000,6000000-11000000")
    assert time.perf_counter() - t0 < 2.0


def test_deep_and_huge_json_named(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    r = _invoke("sample", "--preset", deep, "--out", tmp_path / "s.npz")
    assert r.exit_code != 0 and f"preset {deep}: JSON nested too deeply" in r.output
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"model": "tree2d", "pad": "x" * 2**21}))
    r = _invoke("sample", "--preset", huge, "--out", tmp_path / "s.npz")
    assert r.exit_code != 0 and "JSON files over 1048576 bytes are refused" in r.output
    with pytest.raises(ValueError, match=f"metadata file {tmp_path / 'o' / 'generate.json'}: not valid JSON"):
        (tmp_path / "o").mkdir()
        (tmp_path / "o" / gen.METADATA).write_text('{"settings": ')
        gen.generate(tmp_path / "o", gen.Settings(model="tree2d", steps=3), "0-1", progress=False)


# --------------------------------------------------------------------------- 8. clear CLI / file errors
def test_out_in_proc_is_a_clear_error(tmp_path: Path) -> None:
    r = _invoke("sample", "--model", "tree2d", "--steps", "2", "--num-samples", "2", "--out", "/proc/x.npz", "--quiet")
    assert r.exit_code != 0 and "--out /proc/x.npz: cannot write there" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_sample_out_reports_exactly_the_path_it_wrote(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = _invoke("sample", "--model", "tree2d", "--steps", "2", "--num-samples", "4", "--out", "a", "--quiet")
    assert r.exit_code == 0 and "wrote a and a.png" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.png"]
    with np.load("a") as z:
        assert z["samples"].shape == (4, 2)


def test_cli_range_errors_name_the_option(tmp_path: Path) -> None:
    r = _invoke("generate-bench", "--solvers", "nosuch", "--out", tmp_path / "b", "--quiet")
    assert r.exit_code == 2 and "--solvers" in r.output and "unknown solvers ['nosuch']" in r.output
    r = _invoke("generate-bench", "--repeats", "0", "--out", tmp_path / "b", "--quiet")
    assert r.exit_code == 2 and "--repeats" in r.output
    r = _invoke("adasde-eval", "--nfes", "4", "--out", tmp_path / "e", "--quiet")
    assert r.exit_code == 2 and "--nfes" in r.output and "odd" in r.output
    r = _invoke("tune", "--model", "tree2d", "--nfe", "7", "--solvers", "bogus", "--quiet")
    assert r.exit_code == 2 and "--solvers" in r.output and "unknown solvers ['bogus']" in r.output
    r = _invoke("tune", "--model", "tree2d", "--solvers", "heun", "--nfe", "2", "--quiet")
    assert r.exit_code == 2 and "--nfe" in r.output and "too small" in r.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "e").exists()


def test_sigma_max_overflow_reported_as_out_of_range(tmp_path: Path) -> None:
    r = _invoke(*GEN, "--out", tmp_path / "o", "--sigma-max", "1e300")
    assert r.exit_code != 0 and "sigma_max=1e+300 is out of range" in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key, value, msg", [("steps", 6.7, "'steps' must be an integer, got 6.7"),
                                             ("steps", True, "'steps' must be an integer, got True"),
                                             ("w_stiff", "1", "'w_stiff' must be a finite number"),
                                             ("model", 3, "'model' must be a string")])
def test_preset_wrong_types_are_errors(tmp_path: Path, key: str, value, msg: str) -> None:
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"model": "tree2d", "solver": "heun", "steps": 6, "w_stiff": 0.5, "w_con": 0.0,
                                  "scaling": "z2", key: value}))
    r = _invoke("sample", "--preset", preset, "--out", tmp_path / "s.npz", "--quiet")
    assert r.exit_code == 2 and msg in r.output, r.output
    assert not (tmp_path / "s.npz").exists()


def test_no_nan_in_strict_json(tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert _invoke(*GEN, "--out", out).exit_code == 0
    r = _invoke(*GEN, "--out", out)  # everything skipped: no rate to report
    res = json.loads(r.output.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert res["skipped"] == 8 and res["samples_per_second"] is None
    from erkguid.experiments._output import write_results

    (f,) = write_results(tmp_path / "r", "x", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert Path(f).read_text() == ('{\n  "schema": "erkguid.results",\n  "version": 1,\n  "a": null,\n  "b": [\n    null,\n'
                                   '    1.5\n  ]\n}\n')


def test_diffusers_vae_folder_is_not_a_denoiser(tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    from ._helpers import save_scheduler

    vae = tmp_path / "pipe" / "vae"
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(4,), norm_num_groups=2, latent_channels=2).save_pretrained(vae)
    save_scheduler(tmp_path / "pipe" / "scheduler", _class_name="DDPMScheduler", prediction_type="epsilon")
    r = _invoke("sample", "--model", f"diffusers:{vae}", "--steps", "2", "--num-samples", "2",
                "--out", tmp_path / "s.npz", "--quiet")
    assert r.exit_code != 0 and f"model_dir '{vae}' holds a AutoencoderKL" in r.output and "not a denoiser" in r.output


def test_corrupt_files_are_named(tmp_path: Path) -> None:
    from erkguid.solvers.adasde_coeffs import AdaSDECoefficients, shipped
    from erkguid.training.edm import TrainResult, ship

    coef = shipped("tree2d-nfe3")
    st = coef.save(tmp_path / "c.safetensors")
    st.write_bytes(st.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"coefficients file {st}"):
        AdaSDECoefficients.load(st)
    js = tmp_path / "c.json"
    js.write_text('{"format": ')
    with pytest.raises(ValueError, match=f"coefficients file {js}: not valid JSON"):
        AdaSDECoefficients.load(js)
    (tmp_path / "ship").mkdir()
    (tmp_path / "ship" / "manifest.json").write_text("{oops")
    from erkguid.learned import build_net

    arch = {"kind": "classifier", "dim": 4, "hidden": 4, "feat": 4, "num_classes": 2}
    res = TrainResult("tiny", {"data": "tree2d", "arch": arch, "seed": 0, "batch": 1, "lr": 1.0, "ema": 0.0, "label_dropout": 0.0,
                               "note": ""}, 0.0, 1, 0.0, build_net(arch), {})
    with pytest.raises(ValueError, match=f"manifest {tmp_path / 'ship' / 'manifest.json'}: not valid JSON"):
        ship(res, tmp_path / "ship")
    bad_cfg = tmp_path / "unet"
    bad_cfg.mkdir()
    (bad_cfg / "config.json").write_text("[1, 2")
    r = _invoke("sample", "--model", f"diffusers:{bad_cfg}", "--out", tmp_path / "s.npz", "--quiet")
    assert r.exit_code != 0 and f"model config {bad_cfg / 'config.json'}: not valid JSON" in r.output


def test_generate_killed_three_times_resumes_byte_identical(tmp_path: Path) -> None:
    """The fast version of scripts/kill_resume_check.py: generate SIGKILLed 3 times at random moments of its work,
    then resumed (here in-process); the folder equals an uninterrupted run's byte for byte."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("krc", Path(__file__).resolve().parents[1] / "scripts" / "kill_resume_check.py")
    krc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(krc)
    settings = gen.Settings(model="digits64", steps=6, batch_size=8, dtype="float64", w_stiff=1.0, w_con=0.1)
    gen.generate(tmp_path / "ref", settings, "0-159", progress=False)
    out = tmp_path / "out"
    log = krc._kill_loop([*krc.GENERATE, "--out", str(out)], krc._lock_held(out), lambda: None,
                         out, 3, random.Random(0), lambda: len(list(out.glob("*/*.npz"))) / 160, span=0.8)
    assert len(log) == 3 and log[-1]["progress_at_kill"] < 1, log
    res = gen.generate(out, settings, "0-159", progress=False)
    assert res["written"] > 0 and krc._temps(out) == []
    assert _files(out) == _files(tmp_path / "ref")
