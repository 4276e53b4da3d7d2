"""How benchmark commands save their results: ``NAME.json`` + ``NAME.md`` (+ ``NAME.png``) in one folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, atomic_write_text


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (plots are only written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_results(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str | None = None,
                  plot: Callable[[Path], Any] | None = None) -> list[str]:
    """Write ``result`` to ``NAME.json`` (strict JSON, atomically), ``markdown`` to ``NAME.md`` and ``plot(out_dir / "NAME.png")``
    (each when given) under ``out_dir`` (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.json"]
    atomic_write_json(files[0], result)  # strict JSON: NaN / Infinity are written as null
    if markdown is not None:
        files.append(out / f"{name}.md")
        atomic_write_text(files[-1], markdown if markdown.endswith("\n") else markdown + "\n")
    if plot is not None:
        files.append(out / f"{name}.png")
        plot(files[-1])
    return [str(f) for f in files]
