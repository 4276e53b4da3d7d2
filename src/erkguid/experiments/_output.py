"""Figures of benchmark commands; their results files are written by :func:`erkguid.evaluation.write_results`
(re-exported here)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ..evaluation import write_results  # noqa: F401  (the one results writer, re-exported for existing imports)


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
