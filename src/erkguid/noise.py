"""Per-sample random numbers: a sample's noise depends only on its own seed (EDM2 idea).

Each sample owns a ``torch.Generator``; draws for a batch are stacked from the per-sample
generators, so results never change with batch size or batch composition.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._validate import seed_list


class PerSampleNoise:
    """Standard-normal draws from one generator per sample.

    Args:
        seeds: one integer seed per sample.
        device: device of the returned tensors (generators live on the CPU so that a seed gives
            the same numbers on every device).
    """

    def __init__(self, seeds: Sequence[int] | Tensor, device: torch.device | str = "cpu") -> None:
        self.seeds = seed_list(seeds)  # 1-D integers in [0, 2**64), else a TypeError/ValueError naming seeds
        self.device = torch.device(device)
        self._gens = [torch.Generator().manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        """Draw ``[B, *shape]``; sample ``b`` uses only generator ``b``."""
        out = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float64) for g in self._gens])
        return out.to(self.device, dtype)

    def __call__(self, like: Tensor) -> Tensor:
        """A draw shaped and typed like ``like`` (its first dim must equal the number of seeds)."""
        if like.shape[0] != len(self):
            raise ValueError(f"noise for a batch of {like.shape[0]} requested from {len(self)} seeds")
        return self.randn(like.shape[1:], like.dtype).to(like.device)


def randn_from_seeds(
    seeds: Sequence[int] | Tensor,
    shape: Sequence[int],
    *,
    sigma: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Initial noise ``sigma * N(0, I)`` of shape ``[len(seeds), *shape]``, one seed per sample."""
    return PerSampleNoise(seeds, device).randn(shape, dtype) * sigma
