"""The sampler's own cost against k-diffusion (issue 13), measured by `erkguid overhead`.

With a near-free elementwise denoiser ``D(x; sigma) = x / 2`` on a ``[64, 16384]`` float32 state,
everything measured is the sampler itself: erkguid Heun vs k-diffusion's ``sample_heun``, ERK-Guid
on vs off, kernel-like aten ops and host reads per step, per-sample seeded noise vs one batched
``randn``, and peak allocated memory (tracked per aten op) in units of one state tensor.
Timings interleave the variants round by round and report medians (the machine may be shared).
k-diffusion is a test-only dependency: without it the k-diffusion columns are ``None``.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .._validate import ErkGuidWarning
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
    "aten::scalar_tensor", "aten::_to_copy", "aten::clone",
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
    """Aten ops that do work (no views, allocations, wrappers or host reads) and call no other such op,
    executed by ``fn()``: roughly the kernels a GPU would launch."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()

    def work(e: Any) -> bool:
        return e.name.startswith("aten::") and e.name not in _NO_KERNEL

    return sum(1 for e in prof.events() if work(e) and not any(work(c) for c in e.cpu_children))


def ops_and_reads(device: torch.device, shape: tuple[int, ...] = (64, 1024), steps: int = 10) -> dict[str, Any]:
    """Kernel-like aten ops per step on ``device``; host reads per step of tensors on the state's
    device (the syncs of a GPU run), counted with the state on "meta" (see :mod:`.syncs`); and
    the ops of one ERK-Guid correction on its own."""
    kd = _kdiff()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * 80
    sig = edm_sigmas(steps)
    runs = _variants(x, sig, kd)
    out: dict[str, Any] = {"state_shape": list(shape), "steps": steps, "ops_per_step": {}, "host_reads_per_step": {}}
    with torch.inference_mode():
        for k, fn in runs.items():
            fn()
            out["ops_per_step"][k] = _kernel_ops(fn) / steps
        for k, fn in _variants(x.to("meta"), sig, kd).items():
            with count_host_reads(dummy_meta=True) as reads, warnings.catch_warnings():
                warnings.simplefilter("ignore", ErkGuidWarning)  # meta tensors carry no values: no gate opens
                fn()
            out["host_reads_per_step"][k] = reads.on("meta") / steps
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
        runs: dict[str, Callable[[], Any]] = {"per_sample": partial(noise, like),
                                              "batched_randn": partial(torch.randn, like.shape, device=device)}
        med = _interleaved(runs, device, rounds)
        rows.append({"device": str(device), "shape": list(shape), "median_ms": {k: 1e3 * v for k, v in med.items()},
                     "per_sample_over_batched": med["per_sample"] / med["batched_randn"]})
    return rows


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages that aten ops allocate while active, and the peak of their live total.

    A storage is counted from the op that first returns it until the last tensor returned on it
    dies (CPython frees at refcount zero, so the count is exact and deterministic)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                st = t.untyped_storage()
                key = st.data_ptr()
                if key == 0:
                    continue
                entry = self.live.get(key)
                if entry is None:
                    entry = self.live[key] = [st.nbytes(), 0]
                    self.current += entry[0]
                    self.peak = max(self.peak, self.current)
                entry[1] += 1
                weakref.finalize(t, self._release, key)
        return out

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]


MEM_CONFIGS = (("erkguid", "heun", 0.0), ("erkguid", "heun", 1.0), ("kdiff", "heun", 0.0),
               ("erkguid", "dpmpp_2m", 0.0), ("erkguid", "dpmpp_2m", 1.0), ("kdiff", "dpmpp_2m", 0.0))


def peak_memory(shape: tuple[int, ...] = (8, 4, 64, 64), steps: int = 6) -> dict[str, Any]:
    """Peak of the memory a run allocates beyond its input, in units of one state tensor (tracked
    allocations of every aten op, deterministic), for erkguid plain / ERK-Guid and k-diffusion."""
    kd = _kdiff()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 80
    sig = edm_sigmas(steps)
    peaks: dict[str, float] = {}
    for impl, solver, w in MEM_CONFIGS:
        if impl == "kdiff":
            if kd is None:
                continue
            fn = getattr(kd, f"sample_{solver}")
            run = partial(fn, near_free, x, sig.float(), disable=True)
        else:
            # memory only: the near-free denoiser is no diffusion model, so the divergence guard would stop w > 0 runs
            run = partial(sample, near_free, x, sig, solver=solver, w_stiff=w, w_con=0.0, check_divergence=False)
        with torch.inference_mode():
            tracker = _LiveBytes()
            with tracker:
                run()
        peaks[f"{impl}:{solver}:{w:g}"] = tracker.peak / (x.numel() * x.element_size())

    def diff(a: str, b: str) -> float | None:
        return peaks[a] - peaks[b] if a in peaks and b in peaks else None

    return {
        "state_shape": list(shape),
        "steps": steps,
        "peak_allocated_state_tensors": peaks,
        "heun_erk_extra_state_tensors": diff("erkguid:heun:1", "erkguid:heun:0"),
        "heun_plain_minus_kdiff_state_tensors": diff("erkguid:heun:0", "kdiff:heun:0"),
        "dpmpp_2m_erk_extra_state_tensors": diff("erkguid:dpmpp_2m:1", "erkguid:dpmpp_2m:0"),
        "dpmpp_2m_plain_minus_kdiff_state_tensors": diff("erkguid:dpmpp_2m:0", "kdiff:dpmpp_2m:0"),
    }


def devices() -> list[torch.device]:
    """The CPU, and the first CUDA device when there is one."""
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def run_sampler_cost(rounds: int = 15) -> dict[str, Any]:
    """Everything above, on the CPU (one torch thread; restored after) and (if present) CUDA."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            return _run(rounds)
    finally:
        torch.set_num_threads(threads)


def _run(rounds: int) -> dict[str, Any]:
    res: dict[str, Any] = {"timing": [], "ops_and_reads": [], "noise": [], "loadavg_before": os.getloadavg(), "threads": 1}
    for dev in devices():
        res["timing"].append(time_runs(dev, rounds=rounds))
        res["ops_and_reads"].append({"device": str(dev), **ops_and_reads(dev)})
        res["noise"].extend(noise_cost(dev, rounds=rounds))
    res["memory"] = peak_memory()
    res["loadavg_after"] = os.getloadavg()
    return res


def _f(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def format_sampler_cost(s: dict[str, Any]) -> str:
    """The sampler-cost section of `erkguid overhead` as text (ratios against k-diffusion)."""
    lines = []
    for t, o in zip(s["timing"], s["ops_and_reads"]):
        lines.append(f"sampler cost on {t['device']} ({t['clock']}, {t['rounds']} interleaved rounds, medians), near-free "
                     f"denoiser D = x/2, state {t['state_shape']} float32, {t['steps']} steps"
                     + ("" if t["k_diffusion"] else "; k-diffusion not installed (test-only dependency): no k-diffusion ratios"))
        lines.append(f"  erkguid heun / k-diffusion sample_heun: {_f(t['heun_over_kdiff'])}   "
                     f"erkguid dpmpp_2m / k-diffusion sample_dpmpp_2m: {_f(t['dpmpp_2m_over_kdiff'])}   "
                     f"heun ERK-Guid on / off: {_f(t['erk_on_over_off'])}")
        ms = ", ".join(f"{k} {v:.2f}" for k, v in t["median_run_ms"].items())
        lines.append(f"  run ms: {ms}")
        ops = ", ".join(f"{k} {v:.1f}" for k, v in o["ops_per_step"].items())
        reads = ", ".join(f"{k} {v:.1f}" for k, v in o["host_reads_per_step"].items())
        lines.append(f"  kernel-like aten ops per step ({o['state_shape']}): {ops}; "
                     f"one ERK-Guid correction: {o['ops_one_correction']}")
        lines.append(f"  host reads of state-device tensors per step (syncs on a GPU): {reads}")
    for r in s["noise"]:
        lines.append(f"per-sample noise ({r['device']}, {r['shape']}): {r['median_ms']['per_sample']:.2f} ms vs batched randn "
                     f"{r['median_ms']['batched_randn']:.2f} ms -> {r['per_sample_over_batched']:.2f}x")
    m = s["memory"]
    peaks = ", ".join(f"{k} {v:.2f}" for k, v in m["peak_allocated_state_tensors"].items())
    lines.append(f"peak allocated memory in state tensors ({m['state_shape']}, {m['steps']} steps, "
                 f"tracked aten allocations): {peaks}")
    lines.append(f"  ERK-Guid extra: heun {_f(m['heun_erk_extra_state_tensors'], '.2f')}, "
                 f"dpmpp_2m {_f(m['dpmpp_2m_erk_extra_state_tensors'], '.2f')}; plain minus k-diffusion: "
                 f"heun {_f(m['heun_plain_minus_kdiff_state_tensors'], '.2f')}, "
                 f"dpmpp_2m {_f(m['dpmpp_2m_plain_minus_kdiff_state_tensors'], '.2f')}")
    lines.append(f"load average before/after: {s['loadavg_before'][0]:.2f} / {s['loadavg_after'][0]:.2f}")
    return "\n".join(lines)


def format_sampler_table(s: dict[str, Any]) -> str:
    """The sampler-cost figures as a markdown table with the targets of issue 13 (docs/performance.md)."""
    rows = []
    for t, o in zip(s["timing"], s["ops_and_reads"]):
        d, ops, reads = t["device"], o["ops_per_step"], o["host_reads_per_step"]
        rows += [
            (f"erkguid Heun / k-diffusion `sample_heun` ({d}, {t['clock']})", _f(t["heun_over_kdiff"], ".2f"), "<= 1.05"),
            (f"erkguid `dpmpp_2m` / k-diffusion `sample_dpmpp_2m` ({d})", _f(t["dpmpp_2m_over_kdiff"], ".2f"), "-"),
            (f"Heun + ERK-Guid / Heun ({d})", _f(t["erk_on_over_off"], ".2f"), "<= 1.10"),
            (f"kernel-like ops per step ({d}): Heun plain / + ERK-Guid, `dpmpp_2m` (k-diffusion "
             f"{_f(ops.get('kdiff_heun'), '.1f')}, {_f(ops.get('kdiff_dpmpp_2m'), '.1f')})",
             f"{ops['erkguid_heun']:.1f} / {ops['erkguid_heun_erk']:.1f}, {ops['erkguid_dpmpp_2m']:.1f}", "-"),
            (f"kernel-like ops of one ERK-Guid correction ({d})", str(o["ops_one_correction"]), "few"),
            (f"device reads per step ({d}): Heun, + ERK-Guid, `dpmpp_2m` (k-diffusion "
             f"{_f(reads.get('kdiff_heun'), '.1f')}, {_f(reads.get('kdiff_dpmpp_2m'), '.1f')})",
             f"{reads['erkguid_heun']:.1f}, {reads['erkguid_heun_erk']:.1f}, {reads['erkguid_dpmpp_2m']:.1f}", "<= 1"),
        ]
    for r in s["noise"]:
        rows.append((f"per-sample noise / batched randn ({r['device']}, `{r['shape']}`)", f"{r['per_sample_over_batched']:.2f}",
                     "<= 2"))
    m = s["memory"]
    p = m["peak_allocated_state_tensors"]
    rows += [
        (f"peak memory, state tensors ({m['state_shape']}, {m['steps']} steps): Heun plain / + ERK-Guid (k-diffusion "
         f"{_f(p.get('kdiff:heun:0'), '.0f')})", f"{p['erkguid:heun:0']:.0f} / {p['erkguid:heun:1']:.0f}", "-"),
        (f"peak memory: `dpmpp_2m` plain / + ERK-Guid (k-diffusion {_f(p.get('kdiff:dpmpp_2m:0'), '.0f')})",
         f"{p['erkguid:dpmpp_2m:0']:.0f} / {p['erkguid:dpmpp_2m:1']:.0f}", "-"),
        ("ERK-Guid extra peak memory, Heun / `dpmpp_2m`",
         f"+{m['heun_erk_extra_state_tensors']:.2f} / +{m['dpmpp_2m_erk_extra_state_tensors']:.2f}", "<= 1"),
    ]
    lines = ["| figure | this run | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
