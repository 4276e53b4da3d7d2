"""Load k-diffusion's ``sampling.py`` without its heavy package ``__init__`` (tests, `erkguid overhead`).

``import k_diffusion`` needs torchvision, CLIP and scikit-image; the sampler file itself needs only
torch, scipy, tqdm, torchdiffeq, torchsde and ``utils.append_dims``. We register an empty package and
a stub ``utils`` holding that one function, then execute ``sampling.py`` from the installed wheel.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from .._batch import append_dims


def load_kdiff_sampling() -> types.ModuleType:
    """k-diffusion's sampling module (k-diffusion is test-only: ImportError when it is not installed)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is a test dependency: pip install --no-deps k-diffusion==0.1.1.post1")
    root = Path(next(iter(spec.submodule_search_locations)))
    name = "_erkguid_kdiff_ref"
    if f"{name}.sampling" in sys.modules:
        return sys.modules[f"{name}.sampling"]
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(root)]
    utils = types.ModuleType(f"{name}.utils")

    vars(utils)["append_dims"] = append_dims  # the only utils symbol sampling.py uses; same semantics
    vars(pkg)["utils"] = utils
    sys.modules[name] = pkg
    sys.modules[f"{name}.utils"] = utils
    sspec = importlib.util.spec_from_file_location(f"{name}.sampling", root / "sampling.py")
    if sspec is None or sspec.loader is None:
        raise ImportError(f"cannot load k-diffusion's sampling.py from {root}")
    mod = importlib.util.module_from_spec(sspec)
    sys.modules[f"{name}.sampling"] = mod
    sspec.loader.exec_module(mod)
    return mod
