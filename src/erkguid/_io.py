"""The one place erkguid reads and writes files: atomic writes, strict JSON, bounded reads, folder locks.

* :func:`atomic_write_bytes` (and ``_text``, ``_json``, :func:`atomic_torch_save`): the data goes to a
  temp file in the same folder whose name only this process can own (``.<name>.<pid>-<token>.erkguid-tmp``),
  is fsync'ed, renamed over the target and the folder is fsync'ed, so the target is either the old
  or the new complete file, also after a crash or power loss. On failure only that temp file is removed.
* :func:`to_json` is the one JSON encoder: non-finite floats become ``null`` (strict JSON never holds NaN).
* :func:`read_json` reads a user-supplied JSON file with a size cap and errors that name the file.
* :func:`folder_lock` holds ``fcntl.flock`` on a lock file, failing at once when another process holds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".erkguid-tmp"
TMP_RE = re.compile(r"^\..+\.\d+-[0-9a-f]{16}" + re.escape(TMP_SUFFIX) + r"$")
MAX_JSON_BYTES = 64 * 2**20  # presets, manifests, metadata, checkpoints of coefficients: far below this


def tmp_name(path: Path) -> Path:
    """A temp path next to ``path`` that only this call can own (pid + 64 random bits)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(8)}{TMP_SUFFIX}")


def remove_dead_temps(path: str | Path) -> int:
    """Remove temp files of ``path`` (:func:`tmp_name`) whose writing process no longer runs; returns how many.

    Only regular files named ``.<path name>.<pid>-<16 hex>.erkguid-tmp`` next to ``path`` are considered,
    and only when no process with that pid exists here: a killed writer's leftovers, nothing else.
    """
    path = Path(path)
    pat = re.compile(r"^\." + re.escape(path.name) + r"\.(\d+)-[0-9a-f]{16}" + re.escape(TMP_SUFFIX) + "$")
    n = 0
    if not path.parent.is_dir():
        return 0
    for p in path.parent.iterdir():
        m = pat.match(p.name)
        if m is None or p.is_symlink() or not p.is_file() or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a fresh temp file, fsync it, rename it to ``path``, fsync the folder.

    The temp file is created with ``O_EXCL`` (never follows or replaces an existing file) and removed
    if anything fails; ``path`` then still holds its previous content. Errors name ``path``.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise type(e)(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, **kw: Any) -> str:
    """Strict JSON: NaN and +-Infinity are written as ``null`` (``allow_nan=False`` guards the rest)."""
    return json.dumps(_finite(obj), allow_nan=False, **kw)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    return atomic_write_text(path, to_json(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically and durably (a killed write leaves the previous file intact)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_savefig(fig: Any, path: str | Path, **kw: Any) -> Path:
    """``fig.savefig`` (matplotlib) atomically and durably; the format comes from the suffix of ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **kw)
    return atomic_write_bytes(path, buf.getvalue())


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` with errors naming ``where``: bad syntax, bad encoding, nesting too deep."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def read_json(path: str | Path, *, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file a user may have been handed: size-capped, errors name ``what`` and the path."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{what} {p} is {size} bytes; JSON files over {max_bytes} bytes are refused")
        data = p.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {p} is a directory, not a JSON file") from None
    except OSError as e:
        raise OSError(e.errno, f"cannot read {what} {p}: {e.strerror or e}") from None
    return parse_json(data, f"{what} {p}")


def read_json_object(path: str | Path, *, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """:func:`read_json` that also requires a top-level JSON object."""
    d = read_json(path, what=what, max_bytes=max_bytes)
    if not isinstance(d, dict):
        raise ValueError(f"{what} {path} must hold a JSON object, got {type(d).__name__}")
    return d


class FolderLocked(OSError):
    """Another process holds the lock of an output folder."""


@contextlib.contextmanager
def folder_lock(folder: Path, name: str = ".erkguid.lock", *, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``folder/name`` (created, never deleted) or fail at once.

    The lock is released when the process ends, however it ends; the file records the holder's pid
    while it runs and is emptied when the ``with`` block ends.
    """
    path = folder / name
    if path.is_symlink():
        raise ValueError(f"lock file {path} is a symbolic link; refusing to use it")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    held = False
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run unlocked
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise FolderLocked(f"{folder} is in use by another {what} (pid {holder}); wait for it to finish "
                                   "or use another output folder") from None
        held = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if held:
            os.ftruncate(fd, 0)  # a finished run leaves an empty lock file (a killed one leaves its pid)
        os.close(fd)
