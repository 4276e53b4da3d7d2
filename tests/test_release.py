"""A release a user can install: the wheel and sdist build, pass `twine check`, carry the shipped data files, and the
wheel installed into a fresh virtual environment runs the demo's quick path (a few tens of seconds: builds + demo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["erkguid/data/digits_gmm.npz", "erkguid/data/models/manifest.json", "erkguid/data/models/tree2d-main.safetensors",
           "erkguid/data/adasde/tree2d-nfe5.json"]

CHECK = """
import json, sys
from pathlib import Path
import erkguid
assert Path(erkguid.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), erkguid.__file__
from importlib.metadata import version
den = erkguid.load_learned("tree2d-main")  # a shipped safetensors file
from erkguid.solvers import shipped
coef = shipped("tree2d-nfe5")  # shipped AdaSDE coefficients (json)
print(json.dumps({"file": erkguid.__file__, "version": version("erkguid"), "coef": type(coef).__name__}))
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stdout


def test_build_check_install_and_run_demo(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="needs the test extra (pip install -e .[test]): build, twine")
    pytest.importorskip("twine", reason="needs the test extra (pip install -e .[test]): build, twine")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    src = tmp_path / "src-tree"  # build from a copy: the build writes egg-info/build dirs next to the sources
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".ruff_cache"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], tmp_path, env)
    wheel, sdist = next(dist.glob("erkguid-*.whl")), next(dist.glob("erkguid-*.tar.gz"))
    assert "PASSED" in _run([sys.executable, "-m", "twine", "check", str(wheel), str(sdist)], tmp_path, env)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names and not any(n.startswith(("tests/", "comfyui/")) for n in names)

    venv = tmp_path / "venv"  # fresh venv; torch & co. come from this interpreter's site-packages through a .pth
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    (purelib / "_erkguid_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], tmp_path, env)
    info = json.loads(_run([str(py), "-c", CHECK], tmp_path, env).strip().splitlines()[-1])
    assert info["version"] == "0.1.0" and info["coef"] == "AdaSDECoefficients"
    _run([str(venv / "bin" / "erkguid"), "demo", "--num-samples", "16", "--quiet", "--out", str(tmp_path / "demo")],
         tmp_path, env)
    demo = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert demo and (tmp_path / "demo" / "demo.png").stat().st_size > 0
