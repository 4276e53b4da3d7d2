"""The one place where every integration (diffusers, k-diffusion, ComfyUI) takes its default strengths.

They are :func:`erkguid.recommended` for the solver at the run's NFE: settings that were never worse than
the plain solver on any problem of ``erkguid safe-erk``, and ERK-Guid off (``w_stiff = 0``, the plain solver
bit for bit) where no setting was. The paper's setting (w_stiff = 1, w_con = 0.5) is never a silent default:
with the multistep pairs (DPM-Solver++(2M), DEIS, ...) it lets the state blow up.
"""

from __future__ import annotations

from typing import Any

from ..recommend import recommended


def default_strengths(solver: str, nfe: int | None = None) -> dict[str, Any]:
    """``w_stiff``, ``w_con``, ``scaling`` and ``trust`` for erkguid solver ``solver`` at ``nfe`` evaluations."""
    return recommended(solver, nfe)
