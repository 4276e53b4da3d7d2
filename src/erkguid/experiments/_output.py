"""How benchmark commands save their results: ``NAME.json`` + ``NAME.md`` (+ ``NAME.png``) in one folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .._io import atomic_write_json, atomic_write_text


class _Figures:
    """The few ``pyplot`` calls the plots use, on matplotlib's object API (``Figure``): no global backend
    switch and no pyplot state; a figure is written with ``fig.savefig`` and freed with its last reference."""

    def __init__(self) -> None:
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        self._figure = Figure
        self.cm = SimpleNamespace(tab20=colormaps["tab20"])

    def figure(self, **kw: Any) -> Any:
        return self._figure(**kw)

    def subplots(self, nrows: int = 1, ncols: int = 1, *, figsize: Any = None, **kw: Any) -> tuple[Any, Any]:
        fig = self._figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kw)

    def close(self, fig: Any) -> None:
        """Nothing to do: the figure is not registered anywhere."""


def pyplot() -> Any:
    """A pyplot-like factory for figures that are only written to files (needs the ``plots`` extra)."""
    return _Figures()


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
