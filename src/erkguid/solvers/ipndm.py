"""iPNDM (Zhang & Chen 2023, after Liu et al. 2022's PNDM): fixed-coefficient Adams-Bashforth in sigma.

``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j b_j f_{i-j}`` with the constant-step AB weights
of order k = min(order, i + 1) (lower order while the history fills). Unlike DEIS the weights
ignore the grid's spacing: on a uniform sigma grid iPNDM equals DEIS of the same order (orders
<= 3, tested), but on a non-uniform grid (EDM, log-SNR) constant weights leave an O(h^3) local
error, so the declared (and measured) convergence order is 2 whatever ``order`` is. The step to
sigma = 0 uses the same formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from .base import Solver, StepContext, StepOut, register, to_d
from .multistep import History, previous_pair, push

AB_WEIGHTS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def _ipndm_setup(sigmas: Tensor, options: Mapping[str, Any]) -> None:
    if options["order"] not in AB_WEIGHTS:
        raise ValueError(f"solver option order must be 1, 2, 3 or 4 for ipndm, got {options['order']!r}")


def ipndm_step(ctx: StepContext, i: int, x: Tensor, carry: History | None = None, *, order: int = 4) -> StepOut:
    """One iPNDM step.

    Embedded pair (our choice; the paper does not cover iPNDM): the multistep pair of DEIS in
    Table 9, ``(x_i, f_i)`` vs ``(x_{i-1}, f_{i-1})``, ``h = sigma_{i-1} - sigma_i``, sign -1: iPNDM is
    the same Adams-Bashforth family as DEIS and holds the same history (see :mod:`.multistep`).
    """
    sigma, sigma_next = ctx.sigma(i), ctx.sigma(i + 1)
    denoised = ctx.denoise(x, sigma)
    f = to_d(x, sigma, denoised)
    pair = previous_pair(ctx.levels, i, x, f, carry, reduce=ctx.reduce_pair)
    fs = (f,) if carry is None else (f, *carry.fs)
    w = AB_WEIGHTS[min(order, len(fs))]
    d = sum(wj * fj for wj, fj in zip(w, fs))
    x_next = x + (sigma_next - sigma) * d
    return StepOut(x_next, denoised, push(carry, x if ctx.want_pair else None, f, max(order - 1, 1)), pair)


IPNDM = register(
    Solver(
        "ipndm", ipndm_step, order=2, nfe=lambda n, options, to_zero: n, setup=_ipndm_setup,
        doc="iPNDM, constant-weight AB in sigma (orders 1-4); pair: previous evaluated point, sign -1",
    )
)
