"""`erkguid generate`: per-seed determinism, atomic resumable files, torch.distributed sharding, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erkguid import generate as gen
from erkguid.cli import main
from erkguid.solvers import SOLVERS, Solver, StepContext, StepOut, register, to_d

from ._helpers import save_scheduler, tiny_unet

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _noisy_step(ctx: StepContext, i: int, x: torch.Tensor, carry=None) -> StepOut:
    """A test-only stochastic solver: Euler plus a little per-sample noise from ctx.noise."""
    s, s_next = ctx.sigma(i), ctx.sigma(i + 1)
    d = ctx.denoise(x, s)
    x_next = x + (s_next - s) * to_d(x, s, d)
    if s_next > 0:
        x_next = x_next + 0.1 * s_next * ctx.noise(x)
    return StepOut(x_next, d, None)


@pytest.fixture
def noisy_solver():
    """Register the test-only solver for one test (not at import: other files parametrize over SOLVERS)."""
    register(Solver("test_noisy", _noisy_step, order=1, nfe=lambda n: n, doc="test only"))
    yield "test_noisy"
    SOLVERS.pop("test_noisy", None)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _settings(**kw) -> gen.Settings:
    base = {"model": "digits64", "steps": 6, "batch_size": 4, "dtype": "float64", "w_stiff": 1.0, "w_con": 0.1}
    return gen.Settings(**{**base, **kw})


def test_parse_seeds() -> None:
    assert gen.parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    assert gen.parse_seeds([5, 2]) == [5, 2]
    for bad, msg in [("5-2", "bad range '5-2'"), ("a-b", "not an integer"), ("", "empty item"), ("1,1", "listed twice"),
                     ("-3", "not an integer"), ([-1], r"\[0, 2\^63 - 1\]")]:
        with pytest.raises(ValueError, match=msg):
            gen.parse_seeds(bad)


def test_npz_and_png_are_deterministic_and_readable(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    b1, b2 = gen.npz_bytes(x=a, seed=np.array(3)), gen.npz_bytes(x=a, seed=np.array(3))
    assert b1 == b2
    (tmp_path / "a.npz").write_bytes(b1)
    with np.load(tmp_path / "a.npz") as z:
        assert np.array_equal(z["x"], a) and int(z["seed"]) == 3
    img = torch.tensor([[[-1.0, 0.0], [1.0, 2.0]]])
    from PIL import Image

    (tmp_path / "a.png").write_bytes(gen.png_bytes(img, (-1.0, 1.0)))
    assert np.array(Image.open(tmp_path / "a.png")).tolist() == [[0, 128], [255, 255]]


@pytest.mark.parametrize("solver", ["heun", "test_noisy"])
def test_sample_depends_only_on_its_seed(tmp_path: Path, solver: str, noisy_solver: str) -> None:
    gen.generate(tmp_path / "a", _settings(solver=solver), "0-7", progress=False)
    gen.generate(tmp_path / "b", _settings(solver=solver, batch_size=3), [6, 2, 5], progress=False)
    for q in (2, 5, 6):
        with np.load(gen.seed_path(tmp_path / "a", q, "npz")) as za, np.load(gen.seed_path(tmp_path / "b", q, "npz")) as zb:
            np.testing.assert_allclose(za["x"], zb["x"], rtol=1e-12, atol=1e-12)
            assert int(za["class_label"]) == int(zb["class_label"]) == gen.class_for_seed(q, 10)
    xs = [np.load(gen.seed_path(tmp_path / "a", q, "npz"))["x"] for q in range(8)]
    assert len({x.tobytes() for x in xs}) == 8
    labels = {gen.class_for_seed(q, 10) for q in range(40)}
    assert len(labels) >= 8  # labels drawn per seed, not constant


def test_noise_streams_are_independent() -> None:
    """The solver's noise is not the initial noise again (a fresh generator per seed would repeat it)."""
    assert gen.solver_seed(0) != 0 and gen.solver_seed(0) != gen.solver_seed(1)
    from erkguid.noise import PerSampleNoise

    first = PerSampleNoise([gen.solver_seed(5)]).randn((64,))
    init = PerSampleNoise([5]).randn((64,))
    assert not torch.allclose(first, init)


def test_resume_skips_complete_files_and_rewrites_missing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r1 = gen.generate(out, _settings(), "0-9", progress=False)
    assert (r1["written"], r1["skipped"]) == (10, 0)
    ref = _files(out)
    os.remove(gen.seed_path(out, 5, "npz"))
    stale = gen.seed_path(out, 9, "npz").with_name(".000009.npz.4242-0123456789abcdef.erkguid-tmp")
    stale.write_bytes(b"junk")  # a temp file left by a run killed mid-write
    r2 = gen.generate(out, _settings(), "0-9", progress=False)
    assert (r2["written"], r2["skipped"]) == (1, 6)  # only chunk [4..7] recomputed
    assert not stale.exists()
    assert {k: v for k, v in _files(out).items() if k != gen.LOCK} == {k: v for k, v in ref.items() if k != gen.LOCK}
    with pytest.raises(ValueError, match="different settings"):
        gen.generate(out, _settings(w_stiff=2.0), "0-9", progress=False)


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "erkguid", "generate", "--model", "digits64-image", "--seeds", "0-23", "--out", str(out),
            "--steps", "5", "--batch", "4", "--w-stiff", "1", "--w-con", "0.1", "--quiet", *extra]


def test_killed_run_restarted_gives_identical_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    ref_out = tmp_path / "ref"
    gen.generate(ref_out, gen.Settings(model="digits64-image", steps=5, batch_size=4, w_stiff=1.0, w_con=0.1), "0-23",
                 progress=False)
    out = tmp_path / "killed"
    slow = ("import sys, time; import erkguid.generate as g; w = g.atomic_write\n"
            "def slow_write(*a, **k):\n    w(*a, **k); time.sleep(0.075)\n"
            "g.atomic_write = slow_write; sys.argv = ['erkguid', *sys.argv[1:]]\n"
            "from erkguid._console import main; main()")  # a slowed-down CLI run, so it can be killed mid-way
    cmd = [sys.executable, "-c", slow, *_cli(out)[3:]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*/*.png"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(out.glob("*/*.png")))
    assert 5 <= n_before < 24, "the run was not killed mid-way"
    done = subprocess.run(_cli(out), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["written"] == 24 - n_before and res["skipped"] >= n_before - 3
    assert _files(out) == _files(ref_out)


def test_torchrun_two_ranks_give_the_same_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "erkguid", "generate", "--model", "digits64",
           "--seeds", "0-20", "--out", str(out), "--steps", "5", "--batch", "4", "--dtype", "float64",
           "--w-stiff", "1", "--w-con", "0.1", "--quiet", "--device", "cpu"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    assert res["world_size"] == 2 and res["written"] == 12  # rank 0 owns chunks 0, 2, 4 (4 + 4 + 4 seeds)
    ref = tmp_path / "one"
    gen.generate(ref, gen.Settings(model="digits64", steps=5, batch_size=4, dtype="float64", w_stiff=1.0, w_con=0.1), "0-20",
                 progress=False)
    assert len(_files(out)) == 23 and _files(out) == _files(ref)  # 21 seeds, generate.json, the (empty) lock file


def test_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["generate", "--seeds", "0-3", "--steps", "3", "--quiet"]
    r = runner.invoke(main, [*base, "--model", f"gmm:{tmp_path / 'missing.npz'}", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "model file not found" in r.output
    r = runner.invoke(main, [*base[:1], "--seeds", "9-3", "--steps", "3", "--model", "tree2d", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "bad range '9-3'" in r.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(main, [*base, "--model", "tree2d", "--out", str(blocker / "sub")])
    assert r.exit_code != 0 and "not writable" in r.output
    r = runner.invoke(main, [*base, "--model", "nosuch", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "model must be a built-in" in r.output
    r = runner.invoke(main, [*base, "--model", "tree2d", "--format", "png", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "image-shaped" in r.output
    r = runner.invoke(main, [*base, "--model", "tree2d", "--class", "7", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "class_label 7" in r.output


def test_gmm_file_loader_and_registration_hook(tmp_path: Path) -> None:
    from erkguid import isotropic_gaussian

    g = isotropic_gaussian(dim=4)
    np.savez(tmp_path / "g.npz", weights=g.weights.numpy(), means=g.means.numpy(), covs=g.covs.numpy())
    m = gen.resolve_model(f"gmm:{tmp_path / 'g.npz'}")
    assert m.shape == (4,) and m.num_classes is None
    gen.register_model_loader("testscheme", lambda arg: gen.GenModel(name=f"testscheme:{arg}", denoiser=g.denoise, shape=(4,)))
    res = gen.generate(tmp_path / "o", gen.Settings(model="testscheme:abc", steps=3, batch_size=2), "0-2", progress=False)
    assert res["written"] == 3 and res["format"] == "npz"
    meta = json.loads((tmp_path / "o" / gen.METADATA).read_text())
    assert meta["settings"]["model"] == "testscheme:abc" and meta["versions"]["torch"] == torch.__version__
    assert meta["nfe_per_sample"] == 5


def test_generate_bench_cli_writes_consistent_json(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["generate-bench", "--out", str(tmp_path), "--batch", "2", "--size", "8", "--steps", "3",
                                  "--repeats", "1", "--threads", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "generate_bench.json").read_text())
    (s,) = res["summary"]
    assert s["solver"] == "heun" and len(res["runs"]) == 2
    for run in res["runs"]:
        assert 0 < run["net_s"] < run["wall_s"] and run["overhead"] == pytest.approx(1 - run["net_s"] / run["wall_s"])
        assert run["load1_before"] >= 0
    assert s["throughput_ratio_erk_over_plain"] == pytest.approx(s["erk"]["samples_per_s"] / s["plain"]["samples_per_s"])
    assert "throughput ERK-Guid / plain" in r.output


def test_learned_loader_generates_what_sample_gives(tmp_path: Path) -> None:
    from erkguid import get_sigmas, load_learned, randn_from_seeds, sample

    m = gen.resolve_model("learned:tree2d-main")
    assert (m.shape, m.num_classes, m.info["learned"]) == ((2,), 2, "tree2d-main")
    res = gen.generate(tmp_path / "o", gen.Settings(model="learned:tree2d-main", steps=3, batch_size=2, w_stiff=1.0),
                       "0-2", progress=False)
    assert res["written"] == 3
    d = load_learned("tree2d-main")
    sigmas = get_sigmas("edm", 3, sigma_min=0.002, sigma_max=80.0)
    for q in range(3):
        lab = gen.class_for_seed(q, 2)
        want = sample(d, randn_from_seeds([q], (2,), sigma=80.0), sigmas, w_stiff=1.0, seeds=[gen.solver_seed(q)],
                      class_labels=torch.tensor([lab]))
        with np.load(gen.seed_path(tmp_path / "o", q, "npz")) as z:
            assert int(z["class_label"]) == lab
            np.testing.assert_allclose(z["x"], want[0].numpy(), rtol=1e-5, atol=1e-5)
    for bad in ("learned:nope", "learned:digits-classifier"):
        with pytest.raises(ValueError, match=r"NAME must be one of the shipped denoisers \['digits-main'"):
            gen.resolve_model(bad)


def test_edm_loader_resolves_and_names_its_errors(edm_checkout, tmp_path: Path) -> None:
    src, pkl, net = edm_checkout
    with pytest.raises(ValueError, match="allow_pickle=True"):
        gen.resolve_model(f"edm:{pkl}::{src}")
    m = gen.resolve_model(f"edm:{pkl}::{src}", allow_pickle=True)
    assert (m.shape, m.num_classes, m.sigma_max) == ((1, 4, 4), 3, 80.0)
    x = torch.randn(2, 1, 4, 4)
    s = torch.tensor([0.5, 5.0])
    torch.testing.assert_close(m.denoiser(x, s, class_labels=torch.tensor([0, 2])),
                               net(x, s, torch.nn.functional.one_hot(torch.tensor([0, 2]), 3).float()))
    for bad in (f"edm:{pkl}", f"edm:{pkl}::", f"edm:::{src}"):
        with pytest.raises(ValueError, match=r"must be edm:PICKLE::SOURCE_DIR"):
            gen.resolve_model(bad, allow_pickle=True)
    with pytest.raises(FileNotFoundError, match="pickle_path"):
        gen.resolve_model(f"edm:{tmp_path / 'no.pkl'}::{src}", allow_pickle=True)
    with pytest.raises(FileNotFoundError, match="source_dir"):
        gen.resolve_model(f"edm:{pkl}::{tmp_path / 'nodir'}", allow_pickle=True)


def test_diffusers_loader_resolves_and_generates(tmp_path: Path) -> None:
    tiny_unet(ch=1, num_class_embeds=3).save_pretrained(tmp_path / "pipe" / "unet")
    save_scheduler(tmp_path / "pipe" / "scheduler", _class_name="DDPMScheduler", prediction_type="epsilon", beta_start=1e-4,
                   beta_end=0.02, num_train_timesteps=1000)
    spec = f"diffusers:{tmp_path / 'pipe' / 'unet'}"
    m = gen.resolve_model(spec)
    assert (m.shape, m.num_classes, m.info["prediction"]) == ((1, 8, 8), 3, "epsilon")
    assert 0.002 < m.sigma_min < 0.02 and m.sigma_max == 80.0  # DDPM linear betas: sigma in [0.01, 157]
    res = gen.generate(tmp_path / "o", gen.Settings(model=spec, steps=2, batch_size=2), "0-1", progress=False)
    assert res["format"] == "png" and res["written"] == 2
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        gen.resolve_model(f"diffusers:{tmp_path}")
    with pytest.raises(ValueError, match="needs the directory"):
        gen.resolve_model("diffusers:")


def test_sample_cli_matches_generate_and_previews(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "s.npz"
    r = runner.invoke(main, ["sample", "--model", "learned:tree2d-main", "--steps", "3", "--w-stiff", "1", "--w-con", "0.1",
                             "--num-samples", "4", "--seed", "5", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "4 samples of learned:tree2d-main (2,) with heun, 3 steps" in r.output and "NFE 5" in r.output
    gen.generate(tmp_path / "g", gen.Settings(model="learned:tree2d-main", steps=3, w_stiff=1.0, w_con=0.1, batch_size=3),
                 "5-8", progress=False)
    with np.load(out) as z:
        assert list(z["seeds"]) == [5, 6, 7, 8] and z["samples"].shape == (4, 2)
        for i, q in enumerate(range(5, 9)):
            with np.load(gen.seed_path(tmp_path / "g", q, "npz")) as zg:
                np.testing.assert_allclose(z["samples"][i], zg["x"], rtol=1e-5, atol=1e-5)
                assert int(z["labels"][i]) == int(zg["class_label"])
    assert out.with_suffix(".png").stat().st_size > 1000  # scatter
    from erkguid import isotropic_gaussian

    g3 = isotropic_gaussian(dim=3)
    gen.register_model_loader("testdim3", lambda arg: gen.GenModel(name="testdim3:", denoiser=g3.denoise, shape=(3,)))
    for model, shown in (("digits64-image", True), ("digits64", True), ("gauss", True), ("testdim3:", False)):
        r = runner.invoke(main, ["sample", "--model", model, "--steps", "2", "--num-samples", "3", "--quiet",
                                 "--out", str(tmp_path / f"{model}.npz")])
        assert r.exit_code == 0, r.output
        assert (tmp_path / f"{model}.png").exists() == shown and ("no preview" in r.output) != shown


def test_sample_cli_preset_with_overrides_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    s = gen.Settings(model="tree2d", steps=4, w_stiff=0.5)
    model, sigmas, _ = gen.prepare(s)
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"format": "erkguid.preset/1", "model": "tree2d", "nfe": 7, "solver": "heun",
                                  "solver_options": {}, "sigmas": sigmas.tolist(), "w_stiff": 0.25, "w_con": 0.0,
                                  "scaling": "z2"}))
    r = runner.invoke(main, ["sample", "--preset", str(preset), "--w-stiff", "0.5", "--num-samples", "3", "--quiet",
                             "--out", str(tmp_path / "a.npz")])
    assert r.exit_code == 0, r.output
    assert "of tree2d (2,) with heun, 4 steps (preset grid" in r.output and "w_stiff=0.5, w_con=0" in r.output
    want, _ = gen.sample_seeds(model, s, sigmas, [0, 1, 2])
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_allclose(z["samples"], want.numpy(), rtol=0, atol=0)
    r = runner.invoke(main, ["sample", "--preset", str(preset), "--steps", "5", "--out", str(tmp_path / "b.npz")])
    assert r.exit_code != 0 and "--preset fixes the solver, its options and the sigma grid" in r.output
    old = tmp_path / "old.json"  # a preset of the former `erkguid tune TARGET`: EDM grid, model from the target
    old.write_text(json.dumps({"target": "tree2d-exact", "solver": "heun", "steps": 4, "w_stiff": 0.5, "w_con": 0.0}))
    r = runner.invoke(main, ["sample", "--preset", str(old), "--num-samples", "3", "--quiet", "--out", str(tmp_path / "b.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "b.npz") as z:
        np.testing.assert_allclose(z["samples"], want.numpy(), rtol=0, atol=0)
    old.write_text(json.dumps({"solver": "heun", "steps": 4}))
    r = runner.invoke(main, ["sample", "--preset", str(old), "--out", str(tmp_path / "b.npz")])
    assert r.exit_code != 0 and "lacks keys ['model', 'w_con', 'w_stiff']" in r.output
    for args, msg in ((["sample"], "give --model SPEC or --preset FILE"),
                      (["sample", "--preset", str(tmp_path / "none.json")], "preset file not found"),
                      (["sample", "--model", "nosuch"], "model must be a built-in"),
                      (["sample", "--model", "tree2d", "--solver", "nope"], "nope"),
                      (["sample", "--model", "tree2d", "--class", "5"], "class_label 5")):
        r = runner.invoke(main, [*args, "--out", str(tmp_path / "e.npz")])
        assert r.exit_code != 0 and msg in r.output, (args, r.output)
