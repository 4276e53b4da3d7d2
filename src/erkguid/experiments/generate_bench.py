"""Sampler overhead benchmark: Heun vs ERK-Guid with a small random U-Net at batch 64 on CPU.

For each solver and strength it times whole runs of :func:`erkguid.sample` and, inside them, the
network calls alone; ``overhead = 1 - network_time / wall_time`` is the share of wall time spent in
the sampler (solver arithmetic + ERK-Guid). The machine's 1-minute load average is recorded with
every timing because the CPU may be shared.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..noise import randn_from_seeds
from ..sampling import sample
from ..schedules import edm_sigmas
from ._output import write_results


class SmallUNet(nn.Module):
    """A 2-level convolutional U-Net (random weights) used as an EDM denoiser D(x, sigma)."""

    def __init__(self, ch: int = 3, width: int = 32) -> None:
        super().__init__()
        self.inp = nn.Conv2d(ch + 1, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.out = nn.Conv2d(2 * width, ch, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        c_in = 1 / (1 + s * s).sqrt()
        h0 = self.act(self.inp(torch.cat([x * c_in, s.log().expand(-1, 1, *x.shape[2:]) / 4], 1)))
        h1 = self.act(self.mid(self.act(self.down(h0))))
        eps = self.out(torch.cat([self.act(self.up(h1)), h0], 1))
        return x - s * eps  # epsilon parameterisation -> D(x; sigma)


def _load() -> float:
    return os.getloadavg()[0]


def run_bench(
    out_dir: Path | None = None,
    *,
    batch: int = 64,
    size: int = 32,
    steps: int = 18,
    repeats: int = 3,
    solvers: tuple[str, ...] = ("heun",),
    w_stiff: float = 1.0,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time Heun (w_stiff=0) vs ERK-Guid (w_stiff, w_con=0: always on) per solver; returns rows + ratios.

    The caller's thread count and global RNG state are restored afterwards.
    """
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(out_dir, batch, size, steps, repeats, solvers, w_stiff, progress)
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: Path | None, batch: int, size: int, steps: int, repeats: int, solvers: tuple[str, ...], w_stiff: float,
         progress: bool) -> dict[str, Any]:
    with torch.random.fork_rng(devices=[]):  # a fixed network init without touching the caller's global RNG
        torch.manual_seed(0)
        net = SmallUNet().eval()
    x0 = randn_from_seeds(range(batch), (3, size, size), sigma=80.0)
    sigmas = edm_sigmas(steps)
    clock = {"net": 0.0}

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        t = time.perf_counter()
        y = net(x, sigma)
        clock["net"] += time.perf_counter() - t
        return y

    rows: list[dict[str, Any]] = []
    cases = [(s, w) for s in solvers for w in (0.0, w_stiff)]
    with torch.no_grad():
        sample(denoiser, x0, sigmas, solver=solvers[0])  # warm-up
        for _ in tqdm(range(repeats), disable=not progress, desc="bench"):
            for solver, w in cases:  # interleaved so that load drifts hit every case alike
                clock["net"] = 0.0
                load0 = _load()
                t = time.perf_counter()
                sample(denoiser, x0, sigmas, solver=solver, w_stiff=w, w_con=0.0)
                wall = time.perf_counter() - t
                rows.append({"solver": solver, "w_stiff": w, "wall_s": wall, "net_s": clock["net"],
                             "overhead": 1 - clock["net"] / wall, "samples_per_s": batch / wall,
                             "load1_before": load0, "load1_after": _load()})
    summary = []
    for solver in solvers:
        med = {}
        for w in (0.0, w_stiff):
            rs = [r for r in rows if r["solver"] == solver and r["w_stiff"] == w]
            med[w] = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "net_s", "overhead", "samples_per_s")}
        summary.append({
            "solver": solver, "plain": med[0.0], "erk": med[w_stiff],
            "throughput_ratio_erk_over_plain": med[w_stiff]["samples_per_s"] / med[0.0]["samples_per_s"],
            "extra_sampler_time_per_run_s": (med[w_stiff]["wall_s"] - med[w_stiff]["net_s"])
            - (med[0.0]["wall_s"] - med[0.0]["net_s"]),
        })
    res = {
        "config": {"batch": batch, "image": [3, size, size], "steps": steps, "repeats": repeats, "w_stiff": w_stiff,
                   "w_con": 0.0, "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters()),
                   "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "summary": summary, "runs": rows,
    }
    if out_dir is not None:
        res["files"] = write_results(out_dir, "generate_bench", res, format_table(res))
    return res


def format_table(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"batch {c['batch']}, image {c['image']}, {c['steps']} steps, U-Net {c['params']} params, "
             f"{c['threads']} thread(s), median of {c['repeats']}; load avg (1 min) during runs: "
             f"{min(r['load1_before'] for r in res['runs']):.1f}-{max(r['load1_after'] for r in res['runs']):.1f}",
             "", "| solver | w_stiff | samples/s | wall s | network s | overhead (outside network) |",
             "|---|---|---|---|---|---|"]
    for s in res["summary"]:
        for key, w in (("plain", 0.0), ("erk", c["w_stiff"])):
            m = s[key]
            lines.append(f"| {s['solver']} | {w:g} | {m['samples_per_s']:.2f} | {m['wall_s']:.3f} | {m['net_s']:.3f} | "
                         f"{100 * m['overhead']:.1f}% |")
    lines.append("")
    for s in res["summary"]:
        lines.append(f"{s['solver']}: throughput ERK-Guid / plain = {s['throughput_ratio_erk_over_plain']:.3f}; "
                     f"extra sampler time per run {1000 * s['extra_sampler_time_per_run_s']:.1f} ms")
    return "\n".join(lines)
