"""Per-sample random numbers: a sample's noise depends only on its own seed (EDM2 idea).

Two streams, both independent of batch size and batch composition:

* :func:`randn_from_seeds` (initial noise) draws from one ``torch.Generator`` per sample on the
  CPU, as it always has, so seeded initial states are unchanged.
* :class:`PerSampleNoise` (the per-step noise of stochastic solvers) is counter-based: value
  ``e`` of draw ``k`` of the sample with seed ``s`` is a pure function of ``(s, k, e)``:
  Philox-4x32-10 (Salmon et al. 2011) keyed by the seed, with counter ``(e // 4, k)``, then the
  Box-Muller transform. It runs vectorised over the whole batch in integer tensor ops on the
  state's device; the integer part is exact everywhere, so results agree across devices up to
  the float rounding of ``log``/``sin``/``cos`` (a few ulp).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._validate import seed_list

MASK32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # Philox-4x32 round multipliers
PHILOX_W = (0x9E3779B9, 0xBB67AE85)  # Weyl key increments
_broadcast_shapes: Callable[..., torch.Size] = torch.broadcast_shapes  # torch leaves it untyped
_CHUNK_BLOCKS = {"cpu": 1 << 16}  # blocks per pass: bounds the int64 scratch (results do not depend on it)


def philox4x32(counter: Sequence[Tensor], key: Sequence[Tensor], rounds: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Philox-4x32-``rounds`` on int64 tensors holding uint32 words (broadcast together).

    Each round: ``(c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0))``,
    then the key is bumped by the Weyl constants. The 32x32 -> 64-bit products fit int64 up to
    wrap-around, which keeps the low 64 bits exact. Works in place on fresh buffers.
    """
    k0, k1 = key
    shape = _broadcast_shapes(*(c.shape for c in counter), k0.shape, k1.shape)
    c0, c1, c2, c3 = (c.expand(shape).clone() for c in counter)
    p0, p1 = torch.empty_like(c0), torch.empty_like(c0)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & MASK32, (k1 + PHILOX_W[1]) & MASK32
        torch.mul(c0, PHILOX_M[0], out=p0)
        torch.mul(c2, PHILOX_M[1], out=p1)
        torch.bitwise_right_shift(p1, 32, out=c0)
        c0.bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(MASK32)
        torch.bitwise_right_shift(p0, 32, out=c2)
        c2.bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(MASK32)
        c1, p1 = p1, c1  # the low words; their high bits are masked where they are consumed
        c3, p0 = p0, c3
    return c0, c1.bitwise_and_(MASK32), c2, c3.bitwise_and_(MASK32)


def _seed_words(seeds: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    k0 = torch.tensor([s & MASK32 for s in seeds], dtype=torch.int64, device=device)[:, None]
    k1 = torch.tensor([(s >> 32) & MASK32 for s in seeds], dtype=torch.int64, device=device)[:, None]
    return k0, k1


def philox_normal(seeds: Sequence[int], draw: int, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> Tensor:
    """Standard normals ``[len(seeds), *shape]``: element ``e`` of sample ``b`` depends only on
    ``(seeds[b], draw, e)`` (and the sample size ``n``). Block ``j < m = ceil(n / 4)`` of the
    sample's Philox stream gives its elements ``j, j + m, j + 2m, j + 3m`` by Box-Muller on the
    word pairs (0, 1) and (2, 3), computed in float64 for float64 output, else float32."""
    device = torch.device(device)
    n = math.prod(shape)
    m = (n + 3) // 4
    k0, k1 = _seed_words(seeds, device)
    b = len(seeds)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    out = torch.empty(b, 4, m, dtype=work, device=device)  # four planes of m values: no interleaving copy
    step = max(1, _CHUNK_BLOCKS.get(device.type, 1 << 24) // b)
    d0 = torch.full((), draw & MASK32, dtype=torch.int64, device=device)
    d1 = torch.full((), (draw >> 32) & MASK32, dtype=torch.int64, device=device)
    for j0 in range(0, m, step):
        j = torch.arange(j0, min(m, j0 + step), dtype=torch.int64, device=device)[None, :]
        w = philox4x32((j & MASK32, j >> 32, d0, d1), (k0, k1))
        blk = out[:, :, j0 : j0 + j.shape[1]]
        for pair in (0, 1):
            r = w[2 * pair].to(work).add_(0.5).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()  # u in (0, 1): finite log
            theta = w[2 * pair + 1].to(work).add_(0.5).mul_(2 * math.pi * 2.0**-32)
            torch.mul(r, theta.cos(), out=blk[:, 2 * pair])
            torch.mul(r, theta.sin_(), out=blk[:, 2 * pair + 1])
    return out.reshape(b, 4 * m)[:, :n].reshape(b, *shape).to(dtype)


class PerSampleNoise:
    """Counter-based standard-normal draws for the per-step noise of stochastic solvers.

    Draw ``k`` (the ``k``-th call) of sample ``b`` is :func:`philox_normal` keyed by ``seeds[b]``
    and ``k``: it does not depend on the batch, on the device or on how the draws are chunked.

    Args:
        seeds: one integer seed per sample.
        device: device of the returned tensors (the numbers are the same on every device).
    """

    def __init__(self, seeds: Sequence[int] | Tensor, device: torch.device | str = "cpu") -> None:
        self.seeds = seed_list(seeds)  # 1-D integers in [0, 2**64), else a TypeError/ValueError naming seeds
        self.device = torch.device(device)
        self.draws = 0  # the counter of the next draw

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw ``[B, *shape]`` on ``self.device`` and advance the draw counter."""
        out = philox_normal(self.seeds, self.draws, tuple(shape), dtype, self.device)
        self.draws += 1
        return out

    def __call__(self, like: Tensor) -> Tensor:
        """A draw shaped and typed like ``like``, on its device (its first dim must equal the number of seeds)."""
        if like.shape[0] != len(self):
            raise ValueError(f"noise for a batch of {like.shape[0]} requested from {len(self)} seeds")
        out = philox_normal(self.seeds, self.draws, tuple(like.shape[1:]), like.dtype, like.device)
        self.draws += 1
        return out


def randn_from_seeds(
    seeds: Sequence[int] | Tensor,
    shape: Sequence[int],
    *,
    sigma: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Initial noise ``sigma * N(0, I)`` of shape ``[len(seeds), *shape]``, one seed per sample.

    Sample ``b`` is ``torch.randn(shape, dtype=float64)`` from a CPU ``torch.Generator`` seeded
    with ``seeds[b]`` (drawn once per run, so the per-sample loop costs little).
    """
    seeds = seed_list(seeds)
    out = torch.empty(len(seeds), *shape, dtype=torch.float64)
    for row, s in zip(out, seeds):
        row.normal_(generator=torch.Generator().manual_seed(s))
    return out.to(device, dtype) * sigma
