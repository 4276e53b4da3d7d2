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

Models come from the one resolver, :func:`erkguid.resolve.resolve_model` (built-in mixtures, ``gmm:PATH``,
``learned:NAME``, ``diffusers:DIR``, ``edm:PICKLE::SOURCE_DIR`` with ``allow_pickle``, registered and entry-point
schemes). A preset's grid and solver options arrive as ``Settings.sigmas`` / ``Settings.solver_options``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import _io
from .correction import SCALINGS
from .noise import randn_from_seeds
from .resolve import SCHEMES, Model, register_scheme
from .resolve import resolve_model as _resolve
from .sampling import sample
from .schedules import check_sigmas, get_sigmas
from .solvers import get_solver

METADATA = "generate.json"
LOCK = ".generate.lock"
MAX_SEED = 2**63 - 1
MAX_SEEDS = 10_000_000  # one file per seed: more in one call is a typo, and the seed list alone would take GBs
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
# One resolver for every command (:mod:`erkguid.resolve`); these names stay for existing callers.
GenModel = Model
LOADERS = SCHEMES
register_model_loader = register_scheme


def resolve_model(spec: str, *, allow_pickle: bool = False) -> Model:
    """A :class:`~erkguid.resolve.Model` from ``NAME`` or ``SCHEME:ARG`` (:func:`erkguid.resolve.resolve_model`)."""
    return _resolve(spec, allow_pickle=allow_pickle)


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
    solver_options: dict[str, Any] | None = None
    sigmas: list[float] | None = None  # an explicit grid (from a tune preset); overrides steps/schedule/sigma range
    trust: float | None = None  # ERK-Guid's trust bound (erkguid.sample); None: the paper's correction

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
        for name in ("sigma_min", "sigma_max", "trust"):
            if getattr(self, name) is not None:
                _check_real(name, getattr(self, name), lo=0.0, lo_open=True)
        if self.solver_options is not None and not isinstance(self.solver_options, dict):
            raise TypeError(f"solver_options must be a dict, got {type(self.solver_options).__name__}")
        if self.sigmas is not None:
            check_sigmas(self.sigmas)
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
        "nfe_per_sample": get_solver(s.solver).nfe(len(sigmas) - 1, _options(s)),
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
    if s.sigmas is not None:
        return model, check_sigmas(s.sigmas), dtype
    kw = {"sigma_min": model.sigma_min if s.sigma_min is None else s.sigma_min,
          "sigma_max": model.sigma_max if s.sigma_max is None else s.sigma_max}
    return model, check_sigmas(get_sigmas(s.schedule, s.steps, **kw)), dtype


def _options(s: Settings) -> dict[str, Any]:
    """The run's solver options (a preset's inline AdaSDE coefficients as objects)."""
    from .tune import options_from_json

    return options_from_json(s.solver_options or {})


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
        y = sample(model.denoiser, x, sigmas, solver=s.solver, w_stiff=s.w_stiff, w_con=s.w_con, scaling=s.scaling, trust=s.trust,
                   solver_options=_options(s), seeds=[solver_seed(q) for q in seeds],
                   callback=callback, progress=progress, **extra)
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
