"""One model resolver: a spec string -> a :class:`Model` (denoiser, shape, classes, sigma range, truth).

Every command that takes ``--model`` (sample, generate, tune, profile, bench, distill) resolves it here.

Specs:

* ``NAME`` -- a built-in exact mixture (:data:`erkguid.models.MODELS`, plus ``digits64-image``).
* ``gmm:FILE.npz`` -- a Gaussian mixture file (arrays ``weights``, ``means``, ``covs``[, ``labels``, ``shape``]).
* ``learned:NAME`` -- a shipped learned denoiser; ``learned:PATH.safetensors`` (or a bare ``PATH.safetensors``)
  -- a model written by ``erkguid train --ship DIR`` (its ``manifest.json`` next to it). Training checkpoints
  ``PATH.pt`` are pickles and need ``allow_pickle=True``.
* ``diffusers:DIR`` -- a locally saved diffusers model (:func:`erkguid.loading.load_diffusers`).
* ``edm:PICKLE::SOURCE_DIR`` -- an EDM/EDM2 network pickle; unpickling runs code from the file, so it is
  refused unless the caller opts in (``allow_pickle=True`` / ``--allow-pickle``).
* ``SCHEME:ARG`` for a scheme registered with :func:`register_scheme` or installed by another package
  through the entry-point group ``erkguid.models`` (``scheme = "pkg.module:loader"``); the loader is called
  as ``loader(arg, allow_pickle=..., device=...)`` and returns a :class:`Model`.
"""

from __future__ import annotations

import functools
import inspect
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

ENTRY_POINT_GROUP = "erkguid.models"
EDM_SEP = "::"
# The exact mixture each shipped learned family was trained on (its truth for distribution metrics).
LEARNED_TRUTH = {"tree2d": "tree2d", "digits": "digits64"}


@dataclass
class Model:
    """A model under test.

    Attributes:
        name: the spec it was resolved from (kept for metadata and presets).
        denoiser: EDM ``D(x, sigma[B], class_labels=None, **cond)`` returning the x0 estimate.
        shape: per-sample state shape.
        sigma_min, sigma_max: the default grid range.
        num_classes: class count of class-conditional models, else ``None``.
        info: JSON-able description (stored in metadata).
        value_range: data range (PNG output maps it to [0, 255]).
        sigma_data: the data's standard deviation (EDM preconditioning), where known.
        truth: the exact distribution (a :class:`~erkguid.GaussianMixture` with ``sample``/``log_prob``), if known.
        data: reference data ``[N, *shape]`` for distribution metrics, if known.
    """

    name: str
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    num_classes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] = (-1.0, 1.0)
    sigma_data: float = 0.5
    truth: Any = None
    data: Tensor | None = None

    @property
    def spec(self) -> str:
        return self.name


Loader = Callable[..., Model]
SCHEMES: dict[str, Loader] = {}


def register_scheme(scheme: str, loader: Loader) -> Loader:
    """Make ``resolve_model("<scheme>:<arg>")`` call ``loader(arg)`` (``allow_pickle``/``device`` when it accepts them)."""
    if not scheme.isidentifier():
        raise ValueError(f"scheme must be an identifier, got {scheme!r}")
    SCHEMES[scheme] = loader
    return loader


def _entry_point(scheme: str) -> Loader | None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == scheme:
            try:
                loader = ep.load()
            except Exception as e:  # a broken third-party package must not look like an unknown scheme
                raise ImportError(f"model scheme {scheme!r}: entry point {ep.value!r} (group {ENTRY_POINT_GROUP}) "
                                  f"failed to load: {e}") from e
            if not callable(loader):
                raise TypeError(f"model scheme {scheme!r}: entry point {ep.value!r} is not callable")
            return loader
    return None


def known_schemes() -> list[str]:
    """Registered schemes and those installed through the ``erkguid.models`` entry-point group."""
    return sorted({*SCHEMES, *(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))})


def _call(loader: Loader, arg: str, allow_pickle: bool, device: str | torch.device) -> Model:
    params = inspect.signature(loader).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in (("allow_pickle", allow_pickle), ("device", device)) if var_kw or k in params}
    return loader(arg, **kw)


def resolve_model(spec: str, *, allow_pickle: bool = False, device: str | torch.device = "cpu") -> Model:
    """A :class:`Model` from a spec (see the module docstring); ``allow_pickle`` opts in to unpickling files."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    scheme, sep, arg = spec.partition(":")
    if sep and len(scheme) > 1:  # (a one-letter scheme is a Windows drive)
        loader = SCHEMES.get(scheme) or _entry_point(scheme)
        if loader is None:
            raise ValueError(f"model {spec!r}: unknown scheme {scheme!r}; known: {known_schemes()} or a built-in name "
                             f"({builtin_names()})")
        model = _call(loader, arg, allow_pickle, device)
        if not isinstance(model, Model):
            raise TypeError(f"model scheme {scheme!r} returned {type(model).__name__}, not an erkguid.resolve.Model")
        return model
    if spec.endswith(".safetensors"):
        return _learned_file(spec, device)
    if spec.endswith((".pt", ".pth", ".pkl", ".npz")) or Path(spec).exists():
        if not Path(spec).exists():
            raise FileNotFoundError(f"model file not found: {spec!r}")
        raise ValueError(f"model {spec!r} is a file; prefix it with its scheme: gmm:FILE.npz, learned:FILE.safetensors|.pt, "
                         f"edm:PICKLE{EDM_SEP}SOURCE_DIR, diffusers:DIR")
    return _builtin(spec)


# ----------------------------------------------------------------------------------- loaders
def builtin_names() -> list[str]:
    from .models import MODELS

    return sorted([*MODELS, "digits64-image"])


def _gmm_model(gmm: Any, spec: str, info: dict[str, Any]) -> Model:
    return Model(name=spec, denoiser=gmm.denoise, shape=tuple(gmm.shape),
                 num_classes=gmm.num_classes if gmm.labels is not None else None, truth=gmm,
                 info={"kind": "gaussian_mixture", "components": gmm.num_components, "dim": gmm.dim, **info})


@functools.lru_cache(maxsize=8)
def _builtin(name: str) -> Model:
    from .models import MODELS, digits_64d

    if name == "digits64-image":
        return _gmm_model(digits_64d(image_shape=True), name, {"builtin": name})
    if name not in MODELS:
        raise ValueError(f"model must be a built-in ({builtin_names()}) or SCHEME:ARG with a scheme in {known_schemes()}, "
                         f"got {name!r}")
    build = cast(Callable[[], Any], MODELS[name])
    return _gmm_model(build(), name, {"builtin": name})


def npz_headers(path: Path, max_bytes: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays of an ``.npz``, read from the ``.npy`` headers without loading data.

    Refuses (ValueError naming ``path``) a file that is not an npz, object arrays, and arrays whose
    declared sizes sum to more than ``max_bytes`` (a small compressed file can declare gigabytes).
    """
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(fh)
                out[info.filename[:-4]] = (tuple(shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"model file {path} is not a readable .npz: {e}") from None
    for name, (_, dtype) in out.items():
        if dtype.hasobject:
            raise ValueError(f"model file {path}: array {name!r} holds Python objects; only numeric arrays are read")
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in out.values())
    if total > max_bytes:
        raise ValueError(f"model file {path} declares {total} bytes of arrays "
                         f"({', '.join(f'{k} {list(v[0])}' for k, v in out.items())}); the limit is {max_bytes} bytes")
    return out


MAX_GMM_BYTES = 256 * 2**20  # gmm:PATH arrays, summed as declared in the .npy headers


def _gmm_file(path: str) -> Model:
    from .models import GaussianMixture

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p} (gmm:PATH wants an .npz with weights, means, covs[, labels, shape])")
    heads = npz_headers(p, MAX_GMM_BYTES)  # sizes checked before anything is allocated (a small zip can declare GBs)
    missing = {"weights", "means", "covs"} - set(heads)
    if missing:
        raise ValueError(f"model file {p} lacks arrays {sorted(missing)}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in heads}
        lab = torch.tensor(arrays["labels"]) if "labels" in arrays else None
        shape = tuple(int(s) for s in arrays["shape"]) if "shape" in arrays else None
        gmm = GaussianMixture(torch.tensor(arrays["weights"]), torch.tensor(arrays["means"]).double(),
                              torch.tensor(arrays["covs"]).double(), labels=lab, shape=shape, name=p.stem)
    except (ValueError, TypeError, RuntimeError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"model file {p}: {e}") from None
    return _gmm_model(gmm, f"gmm:{p}", {"file": str(p)})


def _learned_truth(data: str | None, family: str) -> Any:
    from .models import get_model

    key = LEARNED_TRUTH.get(str(data)) or LEARNED_TRUTH.get(family)
    return get_model(key) if key else None


def _learned(arg: str, allow_pickle: bool = False, device: str | torch.device = "cpu") -> Model:
    """``learned:NAME`` (shipped), ``learned:FILE.safetensors`` (shipped by ``erkguid train --ship``) or
    ``learned:FILE.pt`` (a training checkpoint; a pickle, so only with ``allow_pickle``)."""
    from .learned import load_learned, read_manifest

    if arg.endswith(".safetensors"):
        return _learned_file(arg, device)
    if arg.endswith((".pt", ".pth")):
        return _learned_checkpoint(arg, allow_pickle, device)
    manifest = read_manifest()
    names = sorted(n for n, e in manifest.items() if e["arch"]["kind"] != "classifier")
    if arg not in names:
        raise ValueError(f"model learned:{arg}: NAME must be one of the shipped denoisers {names} "
                         "(or a FILE.safetensors written by erkguid train --ship)")
    d = load_learned(arg)
    e = manifest[arg]
    return Model(name=f"learned:{arg}", denoiser=d, shape=d.shape, num_classes=d.num_classes or None, sigma_data=d.sigma_data,
                 truth=_learned_truth(e.get("data"), arg.split("-", 1)[0]),
                 info={"kind": "learned", "learned": arg, "data": e.get("data"), "arch": e.get("arch")})


def _learned_from_entry(net_state: dict[str, Tensor], entry: dict[str, Any], name: str, spec: str) -> Model:
    from .learned import DenoiserMLP, LearnedDenoiser, build_net

    if entry.get("arch", {}).get("kind") != "mlp" or "sigma_data" not in entry:
        raise ValueError(f"model {spec!r}: entry {name!r} is not a denoiser (arch kind {entry.get('arch', {}).get('kind')!r})")
    net = build_net(entry["arch"])
    assert isinstance(net, DenoiserMLP)  # arch kind "mlp", checked above
    try:
        net.load_state_dict(net_state)
    except RuntimeError as e:
        raise ValueError(f"model {spec!r}: weights do not match the architecture {entry['arch']}: {e}") from None
    d = LearnedDenoiser(net, entry["sigma_data"], name=name, manifest=entry)
    return Model(name=spec, denoiser=d, shape=d.shape, num_classes=d.num_classes or None, sigma_data=d.sigma_data,
                 truth=_learned_truth(entry.get("data"), name.split("-", 1)[0]),
                 info={"kind": "learned", "learned": name, "data": entry.get("data"), "arch": entry.get("arch")})


def _learned_file(path: str, device: str | torch.device = "cpu") -> Model:
    from safetensors.torch import load_file

    from ._io import read_json_object

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    mpath = p.parent / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"model {p}: no manifest.json next to it (erkguid train --ship DIR writes both)")
    manifest = read_json_object(mpath, what="manifest")
    if p.stem not in manifest:
        raise ValueError(f"model {p}: {mpath} has no entry {p.stem!r} (entries: {sorted(manifest)})")
    return _learned_from_entry(load_file(str(p), device=str(device)), manifest[p.stem], p.stem, f"learned:{p}")


def _learned_checkpoint(path: str, allow_pickle: bool, device: str | torch.device = "cpu") -> Model:
    p = Path(path)
    if not allow_pickle:
        raise ValueError(f"model learned:{p} is a training checkpoint (a pickle, which can run code when loaded); "
                         "pass allow_pickle=True (CLI: --allow-pickle) if you trust it, or ship it to .safetensors with "
                         "erkguid train --ship")
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    st = torch.load(p, map_location=device, weights_only=False)
    cfg = st.get("config", {}) if isinstance(st, dict) else {}
    if "ema" not in st or "arch" not in cfg:
        raise ValueError(f"model learned:{p}: not an erkguid training checkpoint (needs 'ema' and 'config.arch')")
    sigma_data = st.get("sigma_data", cfg.get("sigma_data"))
    if sigma_data is None:
        from .training.edm import load_data

        sigma_data = round(float(load_data(cfg["data"], seed=cfg.get("seed", 0))[0].std()), 4)
    entry = {"arch": cfg["arch"], "data": cfg.get("data"), "sigma_data": sigma_data}
    return _learned_from_entry(st["ema"], entry, p.parent.name or p.stem, f"learned:{p}")


def _diffusers(model_dir: str, device: str | torch.device = "cpu") -> Model:
    """``diffusers:DIR``: a model saved with ``save_pretrained`` (scheduler config next to it); grid range: its trained
    sigma range within [0.002, 80]; class-conditional when the config has ``num_class_embeds``."""
    from .loading import load_diffusers

    if not model_dir:
        raise ValueError("model diffusers:DIR needs the directory of a saved diffusers model")
    loaded = load_diffusers(model_dir, device=device)
    cfg: dict[str, Any] = dict(cast(Mapping[str, Any], loaded.model.config))
    if cfg.get("cross_attention_dim") is not None and cfg.get("_class_name", "").endswith("ConditionModel"):
        raise ValueError(f"model diffusers:{model_dir} ({cfg.get('_class_name')}) needs encoder_hidden_states (text "
                         "embeddings); the resolver serves unconditional / class-conditional models only; use "
                         "erkguid.loading.load_diffusers + erkguid.sample from Python")
    lo, hi = loaded.sigma_range
    n_cls = cfg.get("num_class_embeds")
    return Model(name=f"diffusers:{model_dir}", denoiser=loaded.denoiser, shape=tuple(loaded.sample_shape),
                 sigma_min=max(0.002, float(lo)), sigma_max=min(80.0, float(hi)), num_classes=int(n_cls) if n_cls else None,
                 info={"kind": "diffusers", "dir": str(model_dir), "class": cfg.get("_class_name"), "prediction": loaded.kind})


def _edm(arg: str, allow_pickle: bool = False, device: str | torch.device = "cpu") -> Model:
    """``edm:PICKLE::SOURCE_DIR``: an EDM/EDM2 network pickle unpickled with the modules of the source checkout
    ``SOURCE_DIR`` (:func:`erkguid.loading.load_edm_pickle`, network key ``ema``); needs ``allow_pickle``."""
    from .loading import load_edm_pickle

    pkl, sep, src = arg.partition(EDM_SEP)
    if not sep or not pkl or not src:
        raise ValueError(f"model edm:{arg} must be edm:PICKLE{EDM_SEP}SOURCE_DIR (the network pickle and the root of "
                         "the EDM/EDM2 source checkout that provides torch_utils/ and dnnlib/)")
    if not allow_pickle:
        raise ValueError(f"model edm:{arg}: loading a network pickle runs any code the file holds; pass allow_pickle=True "
                         "(CLI: --allow-pickle) if you trust it (a preset or metadata file can never opt in)")
    loaded = load_edm_pickle(pkl, src, device=device, allow_pickle=True)  # the caller opted in (checked above)
    label_dim = loaded.denoiser.label_dim
    sd = float(getattr(loaded.net, "sigma_data", 0.5))
    return Model(name=f"edm:{arg}", denoiser=loaded.denoiser, shape=loaded.sample_shape, num_classes=label_dim or None,
                 sigma_data=sd, info={"kind": "edm_pickle", "pickle": pkl, "source_dir": src})


register_scheme("builtin", lambda arg: _builtin(arg))
register_scheme("gmm", _gmm_file)
register_scheme("learned", _learned)
register_scheme("diffusers", _diffusers)
register_scheme("edm", _edm)
