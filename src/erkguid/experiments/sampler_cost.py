"""The sampler's own cost against k-diffusion (issue 13), measured by `erkguid overhead`.

With a near-free elementwise denoiser ``D(x; sigma) = x / 2`` on a ``[64, 16384]`` float32 state,
everything measured is the sampler itself: erkguid Heun vs k-diffusion's ``sample_heun``, ERK-Guid
on vs off, kernel-like aten ops and host reads per step, per-sample seeded noise vs one batched
``randn``, and peak memory (each configuration in a fresh subprocess) in units of one state tensor.
Timings interleave the variants round by round and report medians (the machine may be shared).
k-diffusion is a test-only dependency: without it the k-diffusion columns are ``None``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..correction import ErkPair, erk_guid
from ..noise import PerSampleNoise
from ..sampling import sample
from ..schedules import edm_sigmas
from .syncs import count_host_reads

# aten ops that launch no kernel (metadata, allocation) and are not counted as work
_NO_KERNEL = {
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::reshape", "aten::_reshape_alias",
    "aten::as_strided", "aten::expand", "aten::detach", "aten::unsqueeze", "aten::squeeze", "aten::select",
    "aten::slice", "aten::alias", "aten::t", "aten::transpose", "aten::resolve_conj", "aten::resolve_neg",
    "aten::lift_fresh", "aten::to", "aten::result_type", "aten::_unsafe_view", "aten::permute", "detach_",
    "aten::detach_", "aten::contiguous", "aten::flatten", "aten::unflatten", "aten::item", "aten::_local_scalar_dense",
}


def near_free(x: Tensor, sigma: Tensor, **_: Any) -> Tensor:
    """``D(x; sigma) = x / 2``: one elementwise kernel, so the sampler's own work dominates."""
    return x * 0.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> Callable[[], float]:
    """CPU time of the process on the CPU (robust to other jobs on a shared machine, with one
    torch thread), wall time after a synchronize on an accelerator."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def _interleaved(runs: dict[str, Callable[[], Any]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median time per variant in seconds; one warm-up each, then ``rounds`` rounds over all variants."""
    clock = _clock(device)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(rounds):
        for k, fn in runs.items():
            _sync(device)
            t = clock()
            fn()
            _sync(device)
            times[k].append(clock() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _kdiff() -> Any | None:
    try:
        from ._kdiff import load_kdiff_sampling

        return load_kdiff_sampling()
    except ImportError:
        return None


def _variants(x: Tensor, sig: Tensor, kd: Any | None) -> dict[str, Callable[[], Tensor]]:
    sig_kd = sig.to(x.device, torch.float32)  # k-diffusion's usual grid: float32 on the state's device
    out: dict[str, Callable[[], Tensor]] = {
        "erkguid_heun": lambda: sample(near_free, x, sig),
        "erkguid_heun_erk": lambda: sample(near_free, x, sig, w_stiff=1.0, w_con=0.0),
        "erkguid_dpmpp_2m": lambda: sample(near_free, x, sig, solver="dpmpp_2m"),
    }
    if kd is not None:
        out["kdiff_heun"] = lambda: kd.sample_heun(near_free, x, sig_kd, disable=True)
        out["kdiff_dpmpp_2m"] = lambda: kd.sample_dpmpp_2m(near_free, x, sig_kd, disable=True)
    return out


def time_runs(device: torch.device, shape: tuple[int, ...] = (64, 16384), steps: int = 10, rounds: int = 15) -> dict[str, Any]:
    """Median wall time of whole runs per variant, variants interleaved within each round."""
    kd = _kdiff()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * 80
    sig = edm_sigmas(steps)
    runs = _variants(x, sig, kd)
    with torch.inference_mode():
        med = _interleaved(runs, device, rounds)

    def ratio(a: str, b: str) -> float | None:
        return med[a] / med[b] if a in med and b in med else None

    return {
        "device": str(device),
        "state_shape": list(shape),
        "steps": steps,
        "rounds": rounds,
        "clock": "process CPU time" if device.type == "cpu" else "wall time",
        "median_run_ms": {k: 1e3 * v for k, v in med.items()},
        "heun_over_kdiff": ratio("erkguid_heun", "kdiff_heun"),
        "dpmpp_2m_over_kdiff": ratio("erkguid_dpmpp_2m", "kdiff_dpmpp_2m"),
        "erk_on_over_off": ratio("erkguid_heun_erk", "erkguid_heun"),
        "k_diffusion": None if kd is None else "k-diffusion sampling.py (test-only dependency)",
    }


def _kernel_ops(fn: Callable[[], Any]) -> int:
    """Leaf aten ops that do work (no views, allocations or host reads) executed by ``fn()``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    n = 0
    for e in prof.events():
        if e.name.startswith("aten::") and e.name not in _NO_KERNEL and not any(
            c.name.startswith("aten::") for c in e.cpu_children
        ):
            n += 1
    return n


def _is_grid(t: Tensor) -> bool:
    """erkguid's sigma grid: a float64 CPU vector read on the host by design (never a device sync)."""
    return t.device.type == "cpu" and t.dtype == torch.float64 and t.ndim <= 1


def ops_and_reads(device: torch.device, shape: tuple[int, ...] = (64, 1024), steps: int = 10) -> dict[str, Any]:
    """Kernel-like aten ops per step and host reads of tensors per step (the float64 CPU sigma grid,
    host-side by design, excluded), plus the ops of one ERK-Guid correction on its own."""
    kd = _kdiff()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * 80
    sig = edm_sigmas(steps)
    runs = _variants(x, sig, kd)
    out: dict[str, Any] = {"state_shape": list(shape), "steps": steps, "ops_per_step": {}, "host_reads_per_step": {}}
    with torch.inference_mode():
        for k, fn in runs.items():
            fn()
            out["ops_per_step"][k] = _kernel_ops(fn) / steps
            with count_host_reads(ignore=_is_grid) as reads:
                fn()
            out["host_reads_per_step"][k] = reads.on(device.type) / steps
        g = torch.Generator().manual_seed(1)
        xs = [torch.randn(shape, generator=g).to(device) for _ in range(5)]
        pair = ErkPair(xs[0], xs[1], xs[2], xs[3], h=0.3)
        out["ops_one_correction"] = _kernel_ops(lambda: erk_guid(xs[4], pair, 1.0, 0.0))
    return out


def noise_cost(device: torch.device, rounds: int = 15) -> list[dict[str, Any]]:
    """Per-sample seeded noise (``PerSampleNoise``) against one batched ``torch.randn`` of the same shape."""
    rows = []
    for shape in ((64, 16384), (1024, 1024)):
        like = torch.empty(shape, device=device)
        noise = PerSampleNoise(list(range(shape[0])), device)
        runs = {"per_sample": lambda n=noise, t=like: n(t), "batched_randn": lambda t=like: torch.randn(t.shape, device=device)}
        med = _interleaved(runs, device, rounds)
        rows.append({"device": str(device), "shape": list(shape), "median_ms": {k: 1e3 * v for k, v in med.items()},
                     "per_sample_over_batched": med["per_sample"] / med["batched_randn"]})
    return rows


_MEM_SNIPPET = """
import json, resource, sys, torch
import erkguid as eg
from erkguid.experiments.sampler_cost import near_free
torch.set_num_threads(1)
impl, solver, w = sys.argv[1], sys.argv[2], float(sys.argv[3])
x = torch.randn(8, 4, 512, 512) * 80
sig = eg.edm_sigmas(6)
run = lambda x: eg.sample(near_free, x, sig, solver=solver, w_stiff=w, w_con=0.0)
if impl == "kdiff":
    from erkguid.experiments._kdiff import load_kdiff_sampling
    kd = getattr(load_kdiff_sampling(), "sample_" + solver)
    run = lambda x: kd(near_free, x, sig.float(), disable=True)
with torch.inference_mode():
    run(x[:1].clone())  # warm-up on one sample: first-call allocations are not charged to the run
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(x)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base))
"""

MEM_CONFIGS = (("erkguid", "heun", 0.0), ("erkguid", "heun", 1.0), ("kdiff", "heun", 0.0),
               ("erkguid", "dpmpp_2m", 0.0), ("erkguid", "dpmpp_2m", 1.0), ("kdiff", "dpmpp_2m", 0.0))


def peak_memory(repeats: int = 3) -> dict[str, Any]:
    """Peak RSS increase of one run on an [8, 4, 512, 512] float32 state (32 MiB per state tensor),
    each configuration in a fresh subprocess, configurations interleaved; median over ``repeats``."""
    path = os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    have_kd = _kdiff() is not None
    configs = [c for c in MEM_CONFIGS if have_kd or c[0] != "kdiff"]
    kib: dict[str, list[int]] = {f"{i}:{s}:{w:g}": [] for i, s, w in configs}
    for _ in range(repeats):
        for impl, solver, w in configs:
            out = subprocess.run([sys.executable, "-c", _MEM_SNIPPET, impl, solver, str(w)], capture_output=True,
                                 text=True, env=env, check=True)
            kib[f"{impl}:{solver}:{w:g}"].append(int(json.loads(out.stdout.strip().splitlines()[-1])))
    state_kib = 8 * 4 * 512 * 512 * 4 / 1024
    med = {k: statistics.median(v) / state_kib for k, v in kib.items()}

    def diff(a: str, b: str) -> float | None:
        return med[a] - med[b] if a in med and b in med else None

    return {
        "state_shape": [8, 4, 512, 512],
        "state_tensor_MiB": state_kib / 1024,
        "repeats": repeats,
        "peak_rss_increase_state_tensors": med,
        "heun_erk_extra_state_tensors": diff("erkguid:heun:1", "erkguid:heun:0"),
        "heun_plain_minus_kdiff_state_tensors": diff("erkguid:heun:0", "kdiff:heun:0"),
        "dpmpp_2m_erk_extra_state_tensors": diff("erkguid:dpmpp_2m:1", "erkguid:dpmpp_2m:0"),
        "dpmpp_2m_plain_minus_kdiff_state_tensors": diff("erkguid:dpmpp_2m:0", "kdiff:dpmpp_2m:0"),
    }


def devices() -> list[torch.device]:
    """The CPU, and the first CUDA device when there is one."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def run_sampler_cost(rounds: int = 15, memory_repeats: int = 3) -> dict[str, Any]:
    """Everything above, on the CPU (one torch thread; restored after) and (if present) CUDA."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return _run(rounds, memory_repeats)
    finally:
        torch.set_num_threads(threads)


def _run(rounds: int, memory_repeats: int) -> dict[str, Any]:
    res: dict[str, Any] = {"timing": [], "ops_and_reads": [], "noise": [], "loadavg_before": os.getloadavg(), "threads": 1}
    for dev in devices():
        res["timing"].append(time_runs(dev, rounds=rounds))
        res["ops_and_reads"].append({"device": str(dev), **ops_and_reads(dev)})
        res["noise"].extend(noise_cost(dev, rounds=rounds))
    res["memory"] = peak_memory(memory_repeats)
    res["loadavg_after"] = os.getloadavg()
    return res
