"""Python-level tensor reads (each a device-to-host sync when the tensor lives on an accelerator) per step
of ``erkguid.sample``, counted by :func:`erkguid.experiments.syncs.count_host_reads` (every ``item``, ``tolist``,
``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``numpy`` and ``cpu`` read of a tensor's values).

The per-step figure is the difference between a 20-step and a 10-step run divided by 10; the per-run rest is
set-up (grid validation on the CPU grid, the input's finiteness check). The denoiser is D of N(0, I) in pure
tensor ops, so every counted read is the sampler's own.

Usage: PYTHONPATH=src python scripts/count_syncs.py
"""

from __future__ import annotations

import torch

import erkguid as eg
from erkguid.experiments.syncs import count_host_reads


def main() -> None:
    x = torch.randn(8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10

    def den(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x / (1 + s[:, None] ** 2)

    for solver in ("euler", "heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc"):
        for w in (0.0, 1.0):
            counts = []
            for steps in (10, 20):
                with count_host_reads() as reads:
                    eg.sample(den, x, eg.edm_sigmas(steps, sigma_max=10.0), solver=solver, w_stiff=w)
                counts.append(reads.total)
            per_step = (counts[1] - counts[0]) / 10
            print(f"{solver:9s} w_stiff={w:g}: {per_step:.2f} reads per step, {counts[0] - 10 * per_step:.0f} per run")


if __name__ == "__main__":
    main()
