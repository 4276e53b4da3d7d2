"""`erkguid overhead`: cost of the ERK-Guid correction relative to one denoiser evaluation.

Two states (issue 2): the 64-D digits mixture at batch 1024 (exact denoiser) and an
image-shaped state [8, 4, 64, 64] with a small convolutional stand-in network. For each, the
median wall time of one denoiser evaluation, of one ERK-Guid correction (estimate + Eq. 19 on a
real pair taken from a Heun run) and of a whole Heun run with and without ERK-Guid, measured
in one process. Then the sampler's own cost against k-diffusion (:mod:`.sampler_cost`): run-time
ratios, ops and host reads per step, per-sample noise vs batched ``randn`` and peak allocated
memory in state tensors, on the CPU and on CUDA when present.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..correction import ErkPair, erk_guid
from ..models import digits_64d
from ..noise import randn_from_seeds
from ..sampling import sample
from ..schedules import edm_sigmas
from ._output import write_results
from .sampler_cost import format_sampler_cost, format_sampler_table, run_sampler_cost


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class ConvDenoiser(nn.Module):
    """A small EDM-preconditioned conv net (random weights): a stand-in image model."""

    def __init__(self, channels: int = 4, width: int = 64, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.sigma_data = sigma_data
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, 1, 1, 1).to(x.dtype)
        sd2 = self.sigma_data**2
        c_in, c_skip = 1 / (s**2 + sd2).sqrt(), sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        noise_map = (s.log() / 4).expand(x.shape[0], 1, *x.shape[2:])
        return c_skip * x + c_out * self.net(torch.cat([c_in * x, noise_map], 1))


def _case(name: str, denoiser: Callable[..., torch.Tensor], x: torch.Tensor, steps: int, repeats: int) -> dict[str, Any]:
    sig = edm_sigmas(steps)
    s_mid = torch.full((x.shape[0],), float(sig[steps // 2]), dtype=x.dtype)
    with torch.inference_mode():
        t_den = _median_time(lambda: denoiser(x, s_mid), repeats)
        captured: dict[str, Any] = {}

        def grab(info: dict[str, Any]) -> None:
            if info["i"] == steps // 2:
                captured["x"] = info["x"].clone()

        sample(denoiser, x, sig, w_stiff=1.0, w_con=0.0, callback=grab)
        # a real pair: the state at mid-run and a nearby Euler-like point
        xs = captured["x"]
        s = float(sig[steps // 2])
        f = (xs - denoiser(xs, s_mid)) / s
        x_alt = xs - 0.01 * f
        f_alt = (x_alt - denoiser(x_alt, s_mid)) / s
        pair = ErkPair(xs, f, x_alt, f_alt, h=float(sig[steps // 2] - sig[steps // 2 + 1]))
        t_corr = _median_time(lambda: erk_guid(xs, pair, 1.0, 0.0), repeats * 3)
        t_heun = _median_time(lambda: sample(denoiser, x, sig), max(3, repeats // 3))
        t_erk = _median_time(lambda: sample(denoiser, x, sig, w_stiff=1.0, w_con=0.5), max(3, repeats // 3))
    corrected_steps = steps - 2  # no pair at step 0, never on the final step to 0
    return {
        "case": name,
        "state_shape": list(x.shape),
        "denoiser_eval_ms": 1e3 * t_den,
        "correction_ms": 1e3 * t_corr,
        "correction_over_denoiser": t_corr / t_den,
        "heun_run_s": t_heun,
        "erk_run_s": t_erk,
        "run_overhead_per_corrected_step_over_denoiser": (t_erk - t_heun) / corrected_steps / t_den,
        "steps": steps,
    }


def run_overhead(out_dir: str | Path | None = "runs/overhead", repeats: int = 15, rounds: int = 15,
                 sampler_only: bool = False) -> dict[str, Any]:
    """Measure both cases (unless ``sampler_only``) and the sampler cost; write ``overhead.json``.

    Timings run single-threaded (``torch.set_num_threads(1)``) so that they measure the work
    itself rather than thread contention on a shared machine; the previous setting is restored.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):  # the seeded net init leaves the caller's global RNG alone
            return _run_overhead(out_dir, repeats, rounds, sampler_only)
    finally:
        torch.set_num_threads(threads)


def _run_overhead(out_dir: str | Path | None, repeats: int, rounds: int, sampler_only: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    cases = []
    if not sampler_only:
        gmm = digits_64d()
        x64 = randn_from_seeds(range(1024), (64,), sigma=80.0)
        conv = ConvDenoiser().eval()
        ximg = randn_from_seeds(range(8), (4, 64, 64), sigma=80.0)
        cases = [
            _case("digits64 mixture, batch 1024", gmm, x64, 16, repeats),
            _case("conv net, [8, 4, 64, 64]", conv, ximg, 16, repeats),
        ]
    result = {
        "cases": cases,
        "sampler": run_sampler_cost(rounds),
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
    }
    if out_dir is not None:
        write_results(out_dir, "overhead", result)
    return result


def format_cases(cases: list[dict[str, Any]]) -> str:
    """The per-state table of `erkguid overhead` (README, Cost): one denoiser evaluation against one correction."""
    lines = ["| state | one denoiser eval | one correction | correction / eval |", "|---|---|---|---|"]
    lines += [f"| {c['case']} | {c['denoiser_eval_ms']:.1f} ms | {c['correction_ms']:.2f} ms | "
              f"{100 * c['correction_over_denoiser']:.2f}% |" for c in cases]
    lines += [f"{c['case']}: whole {c['steps']}-step runs, Heun {c['heun_run_s']:.3f} s, + ERK-Guid {c['erk_run_s']:.3f} s "
              f"((ERK - Heun) per corrected step / eval {c['run_overhead_per_corrected_step_over_denoiser']:.2f}; "
              "a difference of two noisy run times)" for c in cases]
    return "\n".join(lines)


def format_overhead(res: dict[str, Any]) -> str:
    """Everything `erkguid overhead` prints about a result: the cases' table (README, Cost) when measured, the
    sampler-cost table (docs/performance.md), then the sampler cost in detail."""
    parts = [format_cases(res["cases"])] if res["cases"] else []
    return "\n\n".join([*parts, format_sampler_table(res["sampler"]), format_sampler_cost(res["sampler"])
                        + f"\ntorch threads {res['threads']}, load average {res['loadavg'][0]:.2f}"])
