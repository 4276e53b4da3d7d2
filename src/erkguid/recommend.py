"""The ERK-Guid setting the evidence supports for each solver: never worse than the plain solver.

The paper's formula (Eq. 19 with z^2 and its default strengths) is not safe as a default: on stiff data it makes
Heun worse at NFE >= 11 and multiplies the error of every multistep solver by up to 1e3-5e4, because z^2 has no
bound. :func:`recommended` returns settings that were never worse than the plain solver beyond their paired 95%
interval on every problem of ``erkguid safe-erk`` (exact mixtures of 2-256 dimensions and learned networks, NFE
5-31); the evidence is committed in ``docs/safe/safe_erk.json`` and summarised in ``docs/safe-erk.md``. Where no
setting met that bar (the multistep solvers: their pair ``x_i`` vs ``x_{i-1}`` measures the step, not an error),
ERK-Guid is off.
"""

from __future__ import annotations

from typing import Any

NFE_BANDS: tuple[tuple[int, int | None], ...] = ((1, 7), (8, 15), (16, None))  # measured: 5, 7 | 11, 15 | 23, 31
ANY_NFE: tuple[int, None] = (1, None)
OFF: dict[str, Any] = {"w_stiff": 0.0, "w_con": 0.0, "scaling": "z2", "trust": None}

# Chosen by erkguid.experiments.safe.select_recommended on docs/safe/safe_erk.json (a test checks they agree).
# Per solver: entries {"nfe": [lo, hi or None], **setting}; [1, None] is the entry for an unknown NFE.
RECOMMENDED: dict[str, list[dict[str, Any]]] = {
    "dpm2": [
        {"nfe": [1, 7], "w_stiff": 1.0, "w_con": 0.05, "scaling": "z2", "trust": 1.0},
        {"nfe": [8, 15], "w_stiff": 1.0, "w_con": 0.05, "scaling": "sat", "trust": None},
        {"nfe": [16, None], "w_stiff": 1.0, "w_con": 0.05, "scaling": "z2", "trust": 0.1},
    ],
    "heun": [
        {"nfe": [1, None], "w_stiff": 2.0, "w_con": 0.05, "scaling": "z2", "trust": 0.5},
        {"nfe": [1, 7], "w_stiff": 2.0, "w_con": 0.05, "scaling": "z2", "trust": 0.5},
        {"nfe": [8, 15], "w_stiff": 2.0, "w_con": 0.05, "scaling": "z2", "trust": 0.5},
        {"nfe": [16, None], "w_stiff": 2.0, "w_con": 0.05, "scaling": "sat", "trust": 0.5},
    ],
}


def in_band(band: tuple[int, int | None] | list[int | None], nfe: int) -> bool:
    lo, hi = band
    return lo is not None and lo <= nfe and (hi is None or nfe <= hi)


def chosen_for(chosen: dict[str, list[dict[str, Any]]], solver: str, nfe: int | None) -> dict[str, Any] | None:
    """The setting of ``chosen`` for ``solver`` at ``nfe`` (``None``: the any-NFE entry); ``None`` if there is none."""
    for entry in chosen.get(solver, []):
        band = tuple(entry["nfe"])
        if band == ANY_NFE if nfe is None else (band != ANY_NFE and in_band(entry["nfe"], nfe)):
            return {k: v for k, v in entry.items() if k != "nfe"}
    return None


def recommended(solver: str, nfe: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`erkguid.sample` (``w_stiff``, ``w_con``, ``scaling``, ``trust``) for ``solver``.

    ``nfe``: the run's network evaluations (``erkguid.get_solver(s).nfe(steps)``); the setting may depend on it
    (DPM-Solver-2 has one per NFE band and none for an unknown NFE). Solvers and bands without evidence of a safe
    gain get ERK-Guid off (``w_stiff = 0``: the plain solver, bit for bit). Use it as
    ``erkguid.sample(net, x, sigmas, solver=s, **erkguid.recommended(s, nfe))``.
    """
    from .solvers import get_solver

    name = get_solver(solver).name
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
        raise ValueError(f"nfe must be None or an integer >= 1, got {nfe!r}")
    return chosen_for(RECOMMENDED, name, nfe) or dict(OFF)
