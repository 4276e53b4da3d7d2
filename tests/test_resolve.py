"""The one model resolver: every scheme, the entry-point group, the pickle opt-in and clear errors."""

from __future__ import annotations

import json
import shutil
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erkguid import GaussianMixture, load_learned, tree_2d
from erkguid.cli import main
from erkguid.resolve import Model, known_schemes, resolve_model


def test_builtin_names_carry_their_exact_truth() -> None:
    m = resolve_model("tree2d")
    assert isinstance(m.truth, GaussianMixture) and m.denoiser == m.truth.denoise
    assert (m.shape, m.num_classes, m.sigma_min, m.sigma_max, m.spec) == ((2,), 2, 0.002, 80.0, "tree2d")
    x, s = torch.randn(3, 2, dtype=torch.float64), torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(m.denoiser(x, s), tree_2d().denoise(x, s), rtol=0, atol=0)
    assert resolve_model("gauss").shape == (16,) and resolve_model("digits64-image").shape == (1, 8, 8)
    assert resolve_model("builtin:digits64").num_classes == 10


def test_gmm_file_and_learned_specs(tmp_path: Path) -> None:
    g = tree_2d()
    np.savez(tmp_path / "g.npz", weights=g.weights.numpy(), means=g.means.numpy(), covs=g.covs.numpy(), labels=g.labels.numpy())
    m = resolve_model(f"gmm:{tmp_path / 'g.npz'}")
    x, s = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.3, dtype=torch.float64)
    torch.testing.assert_close(m.denoiser(x, s), g.denoise(x, s), rtol=0, atol=0)
    assert m.num_classes == 2 and m.truth.num_components == g.num_components
    lm = resolve_model("learned:digits-main")
    want = ((64,), 10, "digits64", load_learned("digits-main").sigma_data)
    assert (lm.shape, lm.num_classes, lm.truth.name, lm.sigma_data) == want


def _shipped_copy(tmp_path: Path, name: str = "tree2d-main") -> Path:
    """A model directory as ``erkguid train --ship DIR`` writes it: NAME.safetensors + manifest.json."""
    src = resources.files("erkguid.data.models")
    with resources.as_file(src.joinpath(f"{name}.safetensors")) as p:
        shutil.copy(p, tmp_path / f"{name}.safetensors")
    manifest = json.loads(src.joinpath("manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({name: manifest[name]}))
    return tmp_path / f"{name}.safetensors"


def test_trained_model_by_path_safetensors_and_checkpoint(tmp_path: Path) -> None:
    path = _shipped_copy(tmp_path)
    want = load_learned("tree2d-main")
    x, s = torch.randn(5, 2), torch.linspace(0.01, 20, 5)
    lab = torch.tensor([0, 1, 0, 1, 2])
    for spec in (f"learned:{path}", str(path)):
        m = resolve_model(spec)
        assert m.num_classes == 2 and m.truth.name == "tree2d"
        torch.testing.assert_close(m.denoiser(x, s, class_labels=lab), want(x, s, class_labels=lab), rtol=0, atol=0)
    # a training checkpoint is a pickle: refused without the opt-in, loaded with it
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.parent.mkdir()
    entry = want.manifest
    torch.save({"ema": want.net.state_dict(), "sigma_data": want.sigma_data,
                "config": {"arch": entry["arch"], "data": entry["data"], "seed": 0}}, ckpt)
    with pytest.raises(ValueError, match=r"allow_pickle=True \(CLI: --allow-pickle\)"):
        resolve_model(f"learned:{ckpt}")
    m = resolve_model(f"learned:{ckpt}", allow_pickle=True)
    torch.testing.assert_close(m.denoiser(x, s), want(x, s), rtol=0, atol=0)
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ValueError, match="has no entry 'tree2d-main'"):
        resolve_model(str(path))


def test_edm_pickle_needs_the_opt_in_before_anything_is_read(tmp_path: Path) -> None:
    for spec in (f"edm:{tmp_path / 'net.pkl'}::{tmp_path}", "edm:/nonexistent.pkl::/nonexistent"):
        with pytest.raises(ValueError, match=r"pass allow_pickle=True \(CLI: --allow-pickle\)"):
            resolve_model(spec)
    with pytest.raises(ValueError, match="must be edm:PICKLE::SOURCE_DIR"):
        resolve_model("edm:net.pkl")


@pytest.mark.parametrize(("spec", "err", "msg"), [
    ("nosuch", ValueError, "model must be a built-in"),
    ("foo:bar", ValueError, "unknown scheme 'foo'"),
    ("missing.npz", FileNotFoundError, "model file not found"),
    ("", ValueError, "non-empty string"),
])
def test_unknown_specs_are_named(spec: str, err: type, msg: str) -> None:
    with pytest.raises(err, match=msg):
        resolve_model(spec)


@pytest.fixture
def entry_point_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A third-party package installed only as a dist-info on sys.path, registering two schemes."""
    site = tmp_path / "site"
    (site / "erkg_thirdparty").mkdir(parents=True)
    (site / "erkg_thirdparty" / "__init__.py").write_text(
        "from erkguid.resolve import Model\n"
        "from erkguid import isotropic_gaussian\n"
        "def load(arg, allow_pickle=False):\n"
        "    g = isotropic_gaussian(dim=int(arg), std=0.25)\n"
        "    return Model(name=f'thirdparty:{arg}', denoiser=g.denoise, shape=(int(arg),), truth=g,\n"
        "                 info={'allow_pickle': allow_pickle})\n"
        "def bad(arg):\n"
        "    return 'not a model'\n")
    dist = site / "erkg_thirdparty-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: erkg-thirdparty\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[erkguid.models]\nthirdparty = erkg_thirdparty:load\nthirdbad = erkg_thirdparty:bad\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("erkg_thirdparty", None)


def test_entry_point_scheme_from_python_and_the_plain_cli(entry_point_package: Path, tmp_path: Path) -> None:
    assert {"thirdparty", "thirdbad"} <= set(known_schemes())
    m = resolve_model("thirdparty:3", allow_pickle=True)
    assert isinstance(m, Model) and m.shape == (3,) and m.info == {"allow_pickle": True}
    with pytest.raises(TypeError, match="returned str, not an erkguid.resolve.Model"):
        resolve_model("thirdbad:1")
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(main, ["sample", "--model", "thirdparty:3", "--steps", "3", "--num-samples", "4", "--quiet",
                                  "--out", str(out)])
    assert r.exit_code == 0, r.output
    with np.load(out) as z:
        assert z["samples"].shape == (4, 3)
