"""The one place where every integration (diffusers, k-diffusion, ComfyUI) takes its default strengths.

Defaults are OFF (``w_stiff = 0``: the plain solver, bit for bit) until a recommended setting
that is safe for every solver exists. The paper's setting (w_stiff = 1, w_con = 0.5; Tables 2-3)
was tuned for Heun/DPM-Solver-2 on EDM models; with the multistep pairs (DPM-Solver++(2M), DEIS)
it lets the state blow up, so it must never be a silent default. When ``erkguid.recommended``
lands, :func:`default_strengths` returns its value for ``solver`` and nothing else changes.
"""

from __future__ import annotations

from typing import NamedTuple


class Strengths(NamedTuple):
    """Default ERK-Guid settings: ``w_stiff`` (Eq. 19 strength), ``w_con`` (gate threshold), ``scaling``."""

    w_stiff: float
    w_con: float
    scaling: str = "z2"


def default_strengths(solver: str) -> Strengths:
    """Default strengths for erkguid solver ``solver`` in every integration (currently off for all solvers)."""
    del solver  # the same (off) setting for every solver until erkguid.recommended exists
    return Strengths(w_stiff=0.0, w_con=0.5)
