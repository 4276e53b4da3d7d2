"""Production batch generation: one file per seed, resumable, atomic, sharded over torch.distributed.

Design (the contract the tests check):

* **A sample depends only on its seed.** Its initial noise, its class label (when the model is
  class-conditional and no class is fixed) and the noise of stochastic solvers come from
  generators derived from that seed alone (:mod:`erkguid.noise`).
* **Fixed batches.** The seed list is cut into consecutive chunks of ``batch_size``; chunk ``k``
  is computed by rank ``k % world_size``. A chunk whose files all exist is skipped; otherwise the
  whole chunk is recomputed (same batch, so the same bytes) and its missing files are written. A
  run killed at any moment and restarted, or run on any number of ranks, therefore writes exactly
  the files of one uninterrupted single-process run.
* **Atomic files.** Each file is written to a temp name only this run can own (pid + random token,
  :mod:`erkguid._io`), fsync'ed and renamed; a file that exists under its final name is complete.
  Temp files a killed earlier run left (that exact name pattern, regular files, not through symlinks)
  are removed at start; nothing else in the folder is ever deleted or overwritten.
* **One run per folder.** Rank 0 holds an exclusive lock (``fcntl.flock`` on ``<out>/.generate.lock``)
  for the whole run; a second run into the same folder fails at once with a clear error (it does not
  wait). Every setting is validated before the folder is touched.
* **Metadata.** ``generate.json`` records model, solver, grid, strengths and versions; it is checked
  and written (atomically) under the lock. A restart with different settings is refused, and so is
  a folder that holds seed folders but no ``generate.json``.

Models come from one resolver (:func:`resolve_model`, also used by ``erkguid sample``): built-in
exact models by name, a GMM ``.npz`` file (``gmm:PATH``), the shipped learned models
(``learned:NAME``), a locally saved diffusers model (``diffusers:DIR``), an EDM/EDM2 network pickle
(``edm:PICKLE::SOURCE_DIR``), and any scheme registered with :func:`register_model_loader`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import math
import os
import platform
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _io
from .correction import SCALINGS
from .noise import randn_from_seeds
from .sampling import sample
from .schedules import check_sigmas, get_sigmas
from .solvers import get_solver

METADATA = "generate.json"
LOCK = ".generate.lock"
MAX_SEED = 2**63 - 1
MAX_SEEDS = 10_000_000  # one file per seed: more in one call is a typo, and the seed list alone would take GBs
MAX_GMM_BYTES = 256 * 2**20  # gmm:PATH arrays, summed as declared in the .npy headers
SEED_DIR = re.compile(r"^\d{6,}$")


# --------------------------------------------------------------------------- seeds
def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """Parse ``"0-49999"``, ``"0,5,10-19"`` (inclusive ranges) or a list of ints into unique seeds."""
    if not isinstance(spec, str):
        seeds = [int(s) for s in spec]
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"seeds: {len(seeds)} seeds; at most {MAX_SEEDS} per run (split the range over runs)")
    else:
        seeds = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                raise ValueError(f"seeds: empty item in {spec!r}")
            lo_s, sep, hi_s = part.partition("-")
            try:
                lo, hi = int(lo_s), int(hi_s) if sep else int(lo_s)
            except ValueError:
                raise ValueError(f"seeds: {part!r} is not an integer or an inclusive range A-B (in {spec!r})") from None
            if hi < lo:
                raise ValueError(f"seeds: bad range {part!r} (end {hi} < start {lo})")
            if len(seeds) + (hi - lo + 1) > MAX_SEEDS:
                raise ValueError(f"seeds: {spec!r} holds more than {MAX_SEEDS} seeds, the most one run takes "
                                 "(split the range over runs)")
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ValueError("seeds: no seeds given")
    bad = [s for s in seeds if s < 0 or s > MAX_SEED]
    if bad:
        raise ValueError(f"seeds must lie in [0, 2^63 - 1], got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds: a seed is listed twice")
    return seeds


def _derived(seed: int, stream: int) -> int:
    """An independent 63-bit seed for ``stream`` of ``seed`` (numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def class_for_seed(seed: int, num_classes: int) -> int:
    """The class label of a seed when none is fixed: uniform, from the seed's own stream."""
    return int(np.random.default_rng(_derived(seed, 1)).integers(num_classes))


def solver_seed(seed: int) -> int:
    """The seed of a sample's solver noise (independent of its initial noise)."""
    return _derived(seed, 2)


# --------------------------------------------------------------------------- models
@dataclass
class GenModel:
    """What ``generate`` needs from a model.

    Attributes:
        name: the spec it was resolved from.
        denoiser: ``D(x, sigma, class_labels=None)`` returning x0 (EDM convention, sigma ``[B]``).
        shape: per-sample state shape; 3-D ``(C, H, W)`` with C in {1, 3} is written as PNG.
        sigma_min, sigma_max: default grid range.
        num_classes: number of classes for class-conditional models, else ``None``.
        info: JSON-able description stored in the metadata.
        value_range: data range mapped to [0, 255] for PNG output.
    """

    name: str
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    num_classes: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    value_range: tuple[float, float] = (-1.0, 1.0)


ModelLoader = Callable[..., GenModel]  # loader(arg) or loader(arg, *, allow_pickle=False)
LOADERS: dict[str, ModelLoader] = {}


def register_model_loader(scheme: str, loader: ModelLoader) -> ModelLoader:
    """Make ``resolve_model("<scheme>:<arg>")`` call ``loader(arg)``; e.g. ``diffusers``, ``edm``, ``learned``."""
    if not scheme.isidentifier():
        raise ValueError(f"scheme must be an identifier, got {scheme!r}")
    LOADERS[scheme] = loader
    return loader


def _gmm_model(gmm: Any, spec: str, info: dict[str, Any]) -> GenModel:
    return GenModel(
        name=spec, denoiser=gmm.denoise, shape=tuple(gmm.shape), num_classes=gmm.num_classes if gmm.labels is not None else None,
        info={"kind": "gaussian_mixture", "components": gmm.num_components, "dim": gmm.dim, **info},
    )


@functools.lru_cache(maxsize=8)
def _builtin(name: str) -> GenModel:
    from .models import MODELS, digits_64d

    if name == "digits64-image":
        return _gmm_model(digits_64d(image_shape=True), name, {"builtin": name})
    if name not in MODELS:
        raise ValueError(f"model must be a built-in ({sorted([*MODELS, 'digits64-image'])}) or SCHEME:ARG with a scheme "
                         f"in {sorted(LOADERS)}, got {name!r}")
    return _gmm_model(MODELS[name](), name, {"builtin": name})


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


def _gmm_file(path: str) -> GenModel:
    from .models import GaussianMixture

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p} (gmm:PATH wants an .npz with weights, means, covs[, labels, shape])")
    heads = npz_headers(p, MAX_GMM_BYTES)
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


def _learned(name: str) -> GenModel:
    """``learned:NAME``: a shipped learned denoiser (:func:`erkguid.load_learned`)."""
    from .learned import load_learned, read_manifest

    manifest = read_manifest()
    names = sorted(n for n, e in manifest.items() if e["arch"]["kind"] != "classifier")
    if name not in names:
        raise ValueError(f"model learned:{name}: NAME must be one of the shipped denoisers {names}")
    d = load_learned(name)
    e = manifest[name]
    return GenModel(name=f"learned:{name}", denoiser=d, shape=d.shape, num_classes=d.num_classes or None,
                    info={"kind": "learned", "learned": name, "data": e.get("data"), "arch": e.get("arch")})


def _diffusers(model_dir: str) -> GenModel:
    """``diffusers:DIR``: a model saved with ``save_pretrained`` (:func:`erkguid.loading.load_diffusers`;
    the scheduler config is looked up next to it). Grid range: the model's trained sigma range within
    [0.002, 80]; class-conditional when the config has ``num_class_embeds``."""
    from .loading import load_diffusers

    if not model_dir:
        raise ValueError("model diffusers:DIR needs the directory of a saved diffusers model")
    loaded = load_diffusers(model_dir)
    cfg: Any = loaded.model.config
    if cfg.get("cross_attention_dim") is not None and cfg.get("_class_name", "").endswith("ConditionModel"):
        raise ValueError(f"model diffusers:{model_dir} ({cfg.get('_class_name')}) needs encoder_hidden_states (text "
                         "embeddings); generate serves unconditional / class-conditional models only; use "
                         "erkguid.loading.load_diffusers + erkguid.sample from Python")
    lo, hi = loaded.sigma_range
    n_cls = cfg.get("num_class_embeds")
    return GenModel(name=f"diffusers:{model_dir}", denoiser=loaded.denoiser, shape=tuple(loaded.sample_shape),
                    sigma_min=max(0.002, float(lo)), sigma_max=min(80.0, float(hi)), num_classes=int(n_cls) if n_cls else None,
                    info={"kind": "diffusers", "dir": str(model_dir), "class": cfg.get("_class_name"), "prediction": loaded.kind})


EDM_SEP = "::"


def _edm(arg: str, *, allow_pickle: bool = False) -> GenModel:
    """``edm:PICKLE::SOURCE_DIR``: an EDM/EDM2 network pickle unpickled with the modules of the EDM/EDM2
    source checkout ``SOURCE_DIR`` (:func:`erkguid.loading.load_edm_pickle`, network key ``ema``).
    Unpickling runs code from the file: only with ``allow_pickle=True`` (``--allow-pickle``)."""
    from .loading import load_edm_pickle

    pkl, sep, src = arg.partition(EDM_SEP)
    if not sep or not pkl or not src:
        raise ValueError(f"model edm:{arg} must be edm:PICKLE{EDM_SEP}SOURCE_DIR (the network pickle and the root of "
                         "the EDM/EDM2 source checkout that provides torch_utils/ and dnnlib/)")
    loaded = load_edm_pickle(pkl, src, allow_pickle=allow_pickle)
    label_dim = loaded.denoiser.label_dim
    return GenModel(name=f"edm:{arg}", denoiser=loaded.denoiser, shape=loaded.sample_shape,
                    num_classes=label_dim or None, info={"kind": "edm_pickle", "pickle": pkl, "source_dir": src})


register_model_loader("builtin", _builtin)
register_model_loader("gmm", _gmm_file)
register_model_loader("learned", _learned)
register_model_loader("diffusers", _diffusers)
register_model_loader("edm", _edm)


def resolve_model(spec: str, *, allow_pickle: bool = False) -> GenModel:
    """A :class:`GenModel` from ``NAME`` (built-in) or ``SCHEME:ARG`` (a registered loader).

    ``allow_pickle`` is passed to loaders that take it (``edm:``): unpickling a file runs code from it,
    so only the person running the command may allow it, never a preset or metadata file.
    """
    if not isinstance(spec, str):
        raise TypeError(f"model must be a string spec, got {type(spec).__name__}")
    scheme, sep, arg = spec.partition(":")
    if sep and scheme in LOADERS:
        loader = LOADERS[scheme]
        if "allow_pickle" in inspect.signature(loader).parameters:
            return loader(arg, allow_pickle=allow_pickle)
        return loader(arg)
    if sep or any(spec.endswith(e) for e in (".npz", ".pt", ".pth", ".safetensors", ".pkl")):
        if sep and len(scheme) > 1:
            raise ValueError(f"model: unknown scheme {scheme!r} in {spec!r}; registered: {sorted(LOADERS)}")
        raise FileNotFoundError(f"model file not found or has no loader: {spec!r} (use gmm:PATH or a registered scheme)"
                                if not Path(spec).exists() else f"model: {spec!r} is a file; prefix it with its loader, "
                                f"one of {sorted(LOADERS)}")
    return _builtin(spec)


# --------------------------------------------------------------------------- files
def seed_path(out: Path, seed: int, ext: str) -> Path:
    """``out/<seed rounded down to 1000>/<seed>.<ext>`` (EDM layout; 1000 files per folder)."""
    return out / f"{seed - seed % 1000:06d}" / f"{seed:06d}.{ext}"


atomic_write = _io.atomic_write_bytes  # temp name only this run owns + fsync + rename + fsync dir


def npz_bytes(compression: int = zipfile.ZIP_STORED, **arrays: Any) -> bytes:
    """An .npz readable by ``np.load`` with fixed timestamps (identical bytes for identical arrays); uncompressed
    unless ``compression=zipfile.ZIP_DEFLATED``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(info, arr_buf.getvalue(), compress_type=compression)
    return buf.getvalue()


def png_bytes(x: Tensor, value_range: tuple[float, float]) -> bytes:
    """A ``[C, H, W]`` state (C = 1 or 3) as an 8-bit PNG; ``value_range`` maps to [0, 255]."""
    from PIL import Image

    lo, hi = value_range
    u8 = ((x.double() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255).to(torch.uint8).cpu()
    arr = u8[0].numpy() if u8.shape[0] == 1 else u8.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def auto_format(shape: Sequence[int]) -> str:
    return "png" if len(shape) == 3 and shape[0] in (1, 3) else "npz"


def _seed_dirs(out: Path) -> list[Path]:
    """The seed folders (``000000``, ``001000``, ...) directly under ``out``; symlinks are not followed."""
    return [p for p in out.iterdir() if SEED_DIR.match(p.name)]


def clean_stale_temps(out: Path) -> int:
    """Remove temp files of killed erkguid runs in ``out`` and its seed folders; returns how many.

    Only regular files whose names match erkguid's temp pattern (``.<name>.<pid>-<16 hex>.erkguid-tmp``)
    are removed, only under the folder lock (no other run writes there), and symlinked folders or
    files are never followed. Anything else (a user's ``report.partial``) is left alone.
    """
    n = 0
    for folder in [out, *(d for d in _seed_dirs(out) if d.is_dir() and not d.is_symlink())]:
        for p in folder.iterdir():
            if _io.TMP_RE.match(p.name) and not p.is_symlink() and p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n


def check_writable(out: Path) -> None:
    """Create ``out`` and check that files can be written there, with a clear error otherwise."""
    if out.is_symlink() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} is a dangling symbolic link")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = _io.tmp_name(out / ".write-test")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"output directory {out} is not writable: {e.strerror or e}") from None


def versions() -> dict[str, str]:
    from . import __version__

    return {"erkguid": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of rank 0 on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed(device: str | None = None) -> Dist:
    """Join the torch.distributed group started by ``torchrun`` (gloo on CPU, nccl on CUDA), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if cuda else torch.device(device or "cpu")
    if world <= 1:
        return Dist(0, 1, dev)
    dist = torch.distributed
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dev)


# --------------------------------------------------------------------------- generation
@dataclass
class Settings:
    """Everything that determines the bytes of the output files (stored in ``generate.json``)."""

    model: str
    solver: str = "heun"
    steps: int = 18
    schedule: str = "edm"
    sigma_min: float | None = None
    sigma_max: float | None = None
    w_stiff: float = 0.0
    w_con: float = 0.0
    scaling: str = "z2"
    class_label: int | None = None
    dtype: str = "float32"
    batch_size: int = 64
    format: str = "auto"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def check(self) -> None:
        """Validate every field (types and ranges) without loading anything; ValueError/TypeError naming it."""
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        if self.class_label is not None:
            _check_int("class_label", self.class_label, 0)
        for name in ("w_stiff", "w_con"):
            _check_real(name, getattr(self, name), lo=0.0)
        for name in ("sigma_min", "sigma_max"):
            if getattr(self, name) is not None:
                _check_real(name, getattr(self, name), lo=0.0, lo_open=True)
        for name, allowed in (("solver", None), ("schedule", None), ("scaling", SCALINGS), ("dtype", tuple(DTYPES)),
                              ("format", ("auto", "png", "npz")), ("model", None)):
            v = getattr(self, name)
            if not isinstance(v, str):
                raise TypeError(f"{name} must be a string, got {type(v).__name__} {v!r}")
            if allowed is not None and v not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {v!r}")
        get_solver(self.solver)


def _check_int(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")


def _check_real(name: str, v: Any, lo: float, lo_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    if not math.isfinite(v) or v < lo or (lo_open and v == lo):
        raise ValueError(f"{name} must be a finite number {'>' if lo_open else '>='} {lo:g}, got {v!r}")


def check_device(device: str | torch.device | None) -> torch.device | None:
    """Parse ``device`` and check it exists here (``cuda`` without CUDA, ``bogus``: ValueError naming it)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: erkguid runs on cpu, cuda or mps")
    return dev


def _metadata(s: Settings, model: GenModel, sigmas: Tensor, fmt: str) -> dict[str, Any]:
    return {
        "settings": {**s.as_dict(), "format": fmt},
        "model": {"spec": model.name, "shape": list(model.shape), "num_classes": model.num_classes, **model.info},
        "sigmas": [float(v) for v in sigmas],
        "nfe_per_sample": get_solver(s.solver).nfe(len(sigmas) - 1),
        "seeds": "one file per seed: <out>/<seed - seed % 1000:06d>/<seed:06d>.<ext>; "
                 "class label and solver noise derived from the seed (erkguid.generate)",
        "versions": versions(),
    }


def _check_or_write_metadata(out: Path, meta: dict[str, Any]) -> None:
    """Under the folder lock: compare with an existing ``generate.json`` or write it (atomically).

    A folder with seed folders but no ``generate.json`` is refused: its files were made by something else.
    """
    path = out / METADATA
    text = _io.to_json(meta, indent=2, sort_keys=True) + "\n"
    if path.is_symlink() or path.exists():
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{path} is not a regular file; refusing to use {out}")
        old = _io.read_json_object(path, what="metadata file")
        new = _io.parse_json(text, METADATA)
        diffs = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        if diffs:
            raise ValueError(f"output directory {out} holds a run with different {', '.join(diffs)} "
                             f"(see {path}); use another --out or delete it")
        return
    seeds = _seed_dirs(out)
    if seeds:
        raise ValueError(f"output directory {out} holds seed folders ({', '.join(sorted(p.name for p in seeds)[:3])}"
                         f"{', ...' if len(seeds) > 3 else ''}) but no {METADATA}: not made by erkguid generate, or "
                         "its metadata was lost; refusing to add files under new settings (use another --out)")
    _io.atomic_write_text(path, text)


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def prepare(s: Settings, *, allow_pickle: bool = False) -> tuple[GenModel, Tensor, torch.dtype]:
    """Check ``s`` and resolve it: ``(model, sigma grid, dtype)`` (grid range defaults to the model's).

    ``allow_pickle``: let an ``edm:`` model be unpickled (runs code from the file; see :func:`resolve_model`).
    """
    s.check()
    dtype = DTYPES[s.dtype]
    model = resolve_model(s.model, allow_pickle=allow_pickle)
    if s.class_label is not None and (model.num_classes is None or not 0 <= s.class_label < model.num_classes):
        raise ValueError(f"class_label {s.class_label} is not a class of model {model.name!r} "
                         f"(classes: {model.num_classes or 'none, unconditional'})")
    kw = {"sigma_min": model.sigma_min if s.sigma_min is None else s.sigma_min,
          "sigma_max": model.sigma_max if s.sigma_max is None else s.sigma_max}
    return model, check_sigmas(get_sigmas(s.schedule, s.steps, **kw)), dtype


def sample_seeds(model: GenModel, s: Settings, sigmas: Tensor, seeds: Sequence[int], *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", callback: Callable[[dict[str, Any]], None] | None = None,
                 progress: bool = False) -> tuple[Tensor, Tensor | None]:
    """Sample one batch: ``(x0 estimates [len(seeds), *shape], class labels or None)``.

    Initial noise, class label (unless ``s.class_label`` is fixed) and solver noise of each sample
    come from its seed alone, so a sample does not depend on the batch it is drawn in.
    """
    x = randn_from_seeds(seeds, model.shape, sigma=float(sigmas[0]), dtype=dtype, device=device)
    extra: dict[str, Any] = {}
    labels = None
    if model.num_classes is not None:
        labels = torch.tensor([s.class_label if s.class_label is not None else class_for_seed(q, model.num_classes)
                               for q in seeds], device=device)
        extra["class_labels"] = labels
    with torch.no_grad():
        y = sample(model.denoiser, x, sigmas, solver=s.solver, w_stiff=s.w_stiff, w_con=s.w_con, scaling=s.scaling,
                   seeds=[solver_seed(q) for q in seeds], callback=callback, progress=progress, **extra)
    return y, labels


def generate(
    out: str | Path,
    settings: Settings,
    seeds: str | Sequence[int],
    *,
    progress: bool = True,
    device: str | None = None,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Generate one file per seed into ``out``; returns counts and timing for this rank.

    Safe to re-run: complete files are skipped (see the module docstring for the guarantees). Every
    setting is checked before ``out`` is touched; rank 0 holds the folder lock for the whole run.
    ``allow_pickle``: let an ``edm:`` model be unpickled (runs code from that file).
    """
    seed_list = parse_seeds(seeds)
    s = settings
    check_device(device)
    model, sigmas, dtype = prepare(s, allow_pickle=allow_pickle)
    fmt = auto_format(model.shape) if s.format == "auto" else s.format
    if fmt == "png" and auto_format(model.shape) != "png":
        raise ValueError(f"format png needs image-shaped states (C, H, W) with C in (1, 3); "
                         f"model {model.name!r} has {model.shape}")
    meta = _metadata(s, model, sigmas, fmt)
    out = Path(out)

    dist = init_distributed(device)
    with contextlib.ExitStack() as stack:
        err = None
        if dist.rank == 0:
            try:
                check_writable(out)
                stack.enter_context(_io.folder_lock(out, LOCK, what="erkguid generate"))
                _check_or_write_metadata(out, meta)
                clean_stale_temps(out)
            except (OSError, ValueError) as e:
                err = e
        err = dist.broadcast(err)
        if err is not None:
            raise err
        return _write_all(out, s, model, sigmas, dtype, fmt, seed_list, dist, progress)


def _write_all(out: Path, s: Settings, model: GenModel, sigmas: Tensor, dtype: torch.dtype, fmt: str, seed_list: list[int],
               dist: Dist, progress: bool) -> dict[str, Any]:

    chunks = [seed_list[k : k + s.batch_size] for k in range(0, len(seed_list), s.batch_size)]
    mine = chunks[dist.rank :: dist.world]
    todo = [c for c in mine if not all(seed_path(out, q, fmt).exists() for q in c)]
    written = 0
    t0 = time.perf_counter()
    bar = tqdm(total=sum(len(c) for c in todo), unit="sample", desc=f"generate {s.solver}{' +ERK' if s.w_stiff else ''}",
               disable=not progress or dist.rank != 0, dynamic_ncols=True)
    for chunk in todo:
        y, labels = sample_seeds(model, s, sigmas, chunk, dtype=dtype, device=dist.device)
        for b, q in enumerate(chunk):
            path = seed_path(out, q, fmt)
            if path.exists() or path.is_symlink():
                continue
            if path.parent.is_symlink():
                raise ValueError(f"seed folder {path.parent} is a symbolic link; refusing to write through it")
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "png":
                data = png_bytes(y[b], model.value_range)
            else:
                arrays: dict[str, Any] = {"x": y[b].cpu().numpy(), "seed": np.array(q, dtype=np.int64)}
                if labels is not None:
                    arrays["class_label"] = np.array(int(labels[b]), dtype=np.int64)
                data = npz_bytes(**arrays)
            atomic_write(path, data)
            written += 1
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - t0
    dist.barrier()
    return {
        "rank": dist.rank, "world_size": dist.world, "seeds": len(seed_list), "format": fmt,
        "skipped": sum(len(c) for c in mine) - sum(len(c) for c in todo), "written": written,
        "seconds": seconds, "samples_per_second": (sum(len(c) for c in todo) / seconds) if todo and seconds > 0 else None,
    }
