"""Sampler cost invariants (issue 13): no host syncs in the adapters, no retained tensor that nothing reads."""

from __future__ import annotations

import math

import pytest
import torch

import erkguid as eg
from erkguid._batch import sigma_vector
from erkguid.denoisers import DiscreteVPSchedule, EDMDenoiser, FlowDenoiser, LinearVPSchedule, VPDenoiser
from erkguid.experiments.syncs import count_host_reads
from erkguid.loading import EDMNetDenoiser


def _same_shape_net(x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
    return torch.tanh(x) * (1 + t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype))


class _EDMNet(torch.nn.Module):
    label_dim = 3

    def forward(self, x, sigma, class_labels=None, **_):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + class_labels.sum(1).reshape(-1, 1, 1, 1)


def _adapters() -> list[tuple[str, object, tuple[int, ...], dict]]:
    labels = torch.tensor([0, 2, 1, 3])
    return [
        ("gmm digits64", eg.digits_64d(), (64,), {}),
        ("learned digits-main", eg.load_learned("digits-main"), (64,), {"class_labels": labels}),
        ("edm", EDMDenoiser(_same_shape_net), (3, 4, 4), {}),
        ("vp discrete eps", VPDenoiser(_same_shape_net, DiscreteVPSchedule.from_betas()), (3, 4, 4), {}),
        ("vp linear v", VPDenoiser(_same_shape_net, LinearVPSchedule(), prediction="v_prediction"), (3, 4, 4), {}),
        ("flow", FlowDenoiser(_same_shape_net), (3, 4, 4), {}),
        ("edm pickle net", EDMNetDenoiser(_EDMNet()), (3, 4, 4), {"class_labels": torch.tensor([0, 2, 1, 0])}),
    ]


@pytest.mark.parametrize("name,den,shape,cond", _adapters(), ids=[a[0] for a in _adapters()])
def test_adapters_make_no_host_read_of_device_tensors(name, den, shape, cond):
    """On the "meta" device every value read raises, so an evaluation that completes there read
    nothing back; the counter confirms zero reads of device tensors (a GPU run's syncs)."""
    x = torch.randn(4, *shape)
    sigma = torch.tensor([0.1, 1.0, 10.0, 80.0])
    ref = den(x, sigma, **cond)  # CPU: values checked, finite result
    assert ref.shape == x.shape and torch.isfinite(ref).all()
    meta = {k: v.to("meta") for k, v in cond.items()}
    with count_host_reads() as reads:
        out = den(x.to("meta"), sigma.to("meta"), **meta)
    assert out.shape == x.shape and out.device.type == "meta"
    assert reads.on("meta") == 0, reads


def test_count_host_reads_sees_every_kind_of_read():
    t = torch.ones(3)
    with count_host_reads() as reads:
        bool(t.all()), float(t[0]), int(t[1]), t.tolist(), f"{t[0]:.2f}", t.numpy()
    assert reads.on("cpu") == 6 and reads.total == 6, reads  # __format__'s inner item() is not counted twice
    with count_host_reads() as reads:
        (t * 2).sum()
    assert reads.total == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, torch.tensor([0.5, -0.1]), torch.tensor([math.nan, 1.0])])
def test_sigma_vector_still_rejects_bad_sigma_on_the_host(bad):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        sigma_vector(bad, x)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        eg.digits_64d()(torch.zeros(2, 64), bad)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        EDMDenoiser(_same_shape_net)(x, 0.0 if not isinstance(bad, torch.Tensor) else bad)


def test_sigma_vector_python_float_matches_tensor_path():
    x = torch.zeros(3, 2)
    for dtype in (torch.float64, torch.float32, None):
        a, b = sigma_vector(0.3, x, dtype=dtype), sigma_vector(torch.tensor(0.3, dtype=dtype or torch.float32), x, dtype=dtype)
        assert a.dtype == b.dtype and torch.equal(a, b) and a.shape == (3,)


def test_erk_guid_correction_makes_no_host_read():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 4, 5, generator=g).to("meta") for _ in range(5)]
    with count_host_reads() as reads:
        c = eg.erk_guid(xs[4], eg.ErkPair(xs[0], xs[1], xs[2], xs[3], h=0.3), 1.0, 0.5)
    assert c.x.shape == (3, 4, 5) and reads.total == 0, reads


def test_dummy_meta_counts_the_loops_reads_without_values():
    """With the state on "meta", every read the loop makes of a state-device tensor is counted and
    answered with a dummy; a read on the CPU is not a device read."""
    x = torch.zeros(2, 3, device="meta")
    with count_host_reads(dummy_meta=True) as reads:
        assert bool(torch.isfinite(x).all()) and float(x.sum()) == 1.0
        assert torch.ones(2).sum().item() == 2.0
    assert reads.on("meta") == 2 and reads.on("cpu") == 1
    with pytest.raises(RuntimeError):  # without dummy_meta a meta read raises: values do not exist
        bool(x.sum() > 0)


def _carried(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _carried(o)]
    return []


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc", "dpm2", "euler"])
def test_plain_solvers_carry_no_erk_partner(name):
    """Without a consumer of the pair (ERK-Guid off, no callback) a step keeps no state it only
    needed for the pair: no carried tensor is one of the states the steps were called at, and
    DPM-Solver++(2M) carries exactly what k-diffusion's sample_dpmpp_2m does (the last D)."""
    from erkguid.solvers import StepContext, get_solver

    g = eg.digits_64d()
    grid = eg.edm_sigmas(6)
    spec = get_solver(name)
    runs = {}
    for want in (False, True):
        ctx = StepContext(lambda x, s: g(x, torch.full((x.shape[0],), s, dtype=torch.float64)), grid, want_pair=want,
                          plan=spec.plan(grid))
        x, carry, states, outs = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 80, None, [], []
        for i in range(4):
            states.append(x)
            out = spec.step(ctx, i, x, carry)
            x, carry = out.x, out.carry
            outs.append(x)
            if not want:
                kept = _carried(carry)
                if name == "unipc":  # its corrector reads the interval's start and predictor: only the pair's point goes
                    assert carry is None or (carry.x_eval is None and carry.f_eval is None)
                else:
                    assert not any(t is s for t in kept for s in states), f"step {i} keeps a state only the pair reads"
                assert out.pair is None or name in ("dpm2",)  # dpm2 builds its pair from live tensors only
                if name == "dpmpp_2m":
                    assert len(kept) == 1 and kept[0] is out.denoised
                if name == "dpmpp_3m":  # k-diffusion's 3M keeps the last two D's, and so do we
                    assert kept and all(any(t is d for d in carry.denoised) for t in kept) and len(kept) <= 2
        runs[want] = outs
    assert all(torch.equal(a, b) for a, b in zip(runs[False], runs[True]))  # the pair never changes the plain step


@pytest.mark.parametrize("which", ["gmm", "learned"])
def test_sampling_with_a_compiled_denoiser(which):
    """torch.compile traces the denoiser as one graph (fullgraph: no host read, no graph break) and
    sampling with it gives the eager result bit for bit. The "aot_eager" backend checks tracing
    without generating C++ (inductor's first compile takes minutes on this CPU)."""
    den = eg.digits_64d() if which == "gmm" else eg.load_learned("digits-main")
    compiled = torch.compile(den, backend="aot_eager", fullgraph=True, dynamic=False)
    x = eg.randn_from_seeds(range(4), (64,), sigma=80.0)
    sig = eg.edm_sigmas(4)
    assert torch.equal(eg.sample(compiled, x, sig, w_stiff=1.0), eg.sample(den, x, sig, w_stiff=1.0))


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "dpm2"])
def test_erk_guid_extra_peak_memory_is_at_most_one_state_tensor(solver):
    """Tracked allocations (every aten op, deterministic): ERK-Guid's peak over the plain solver's is
    <= 1 state tensor, and folding the pair at once (no callback) changes no bit of the result."""
    from erkguid.experiments.sampler_cost import _LiveBytes, near_free

    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 80
    sig = eg.edm_sigmas(6)
    peak = {}
    for w in (0.0, 0.8):
        with torch.inference_mode():
            tracker = _LiveBytes()
            with tracker:
                out = eg.sample(near_free, x, sig, solver=solver, w_stiff=w, check_divergence=False)  # memory only
        peak[w] = tracker.peak / (x.numel() * x.element_size())
    per_sample_scalars = 32 * x.shape[0] * 8 / (x.numel() * x.element_size())  # slack: up to 32 [B] float64 vectors
    assert peak[0.8] - peak[0.0] <= 1.0 + per_sample_scalars, peak
    with_callback = eg.sample(near_free, x, sig, solver=solver, w_stiff=0.8, callback=lambda info: None,
                              check_divergence=False)  # full pairs
    assert torch.equal(out, with_callback)


@pytest.mark.parametrize("solver", ["heun", "dpmpp_3m", "lms"])
def test_engine_reduces_pairs_only_when_nothing_else_reads_them(solver):
    """Run with ERK-Guid and want_pair=None reports reduced pairs (partner released), want_pair=True full
    ones, plain runs none; the states are bit-identical, and a reduced pair refuses to hand out its members."""
    g = eg.digits_64d()
    x = eg.randn_from_seeds(range(3), (64,), sigma=80.0)
    sig = eg.edm_sigmas(6)
    auto = list(eg.Run(g, x, sig, solver=solver, w_stiff=0.8))
    full = list(eg.Run(g, x, sig, solver=solver, w_stiff=0.8, want_pair=True))
    assert all(torch.equal(a.x, b.x) for a, b in zip(auto, full))
    reduced = [s.pair for s in auto if s.pair is not None]
    assert reduced and all(p.reduced is not None and p.f is None and p.x_alt is None for p in reduced)
    assert all(s.pair is None or s.pair.reduced is None for s in full)
    assert all(torch.equal(a.estimate().rho, b.estimate().rho) for a, b in zip(auto, full) if a.pair is not None)
    with pytest.raises(TypeError, match="reduced"):
        reduced[0].full()
    with pytest.raises(TypeError, match="unless it is reduced"):
        eg.ErkPair(x, None, None, None, 0.1)


def test_all_finite_agrees_with_the_elementwise_check():
    """The engine's one-pass finiteness flag equals isfinite(t).all() for NaN, +-Inf, extreme finite values,
    reduced dtypes and empty tensors (aminmax propagates NaN)."""
    from erkguid._batch import all_finite

    g = torch.Generator().manual_seed(0)
    big = torch.finfo(torch.float32).max
    cases = [torch.randn(5, 7, generator=g), torch.tensor([big, -big, 0.0]), torch.empty(3, 0)]
    for bad in (float("nan"), float("inf"), -float("inf")):
        for pos in (0, 17, 34):
            t = torch.randn(5, 7, generator=g)
            t.view(-1)[pos] = bad
            cases.append(t)
    cases += [c.to(dt) for c in cases[:5] for dt in (torch.float16, torch.bfloat16, torch.float64)]
    for t in cases:
        assert bool(all_finite(t)) == bool(torch.isfinite(t).all()), t


def test_overhead_sampler_benchmark_runs_on_the_default_path():
    """`erkguid overhead --sampler-only` end to end (one round): ratios, syncs per step and memory come back finite."""
    import math

    from erkguid.experiments.sampler_cost import run_sampler_cost

    res = run_sampler_cost(1)
    cpu = res["ops_and_reads"][0]
    assert cpu["host_reads_per_step"]["erkguid_heun"] <= 1.2  # one per step + the run's set-up spread over the steps
    mem = res["memory"]
    state = math.prod(mem["state_shape"]) * 4  # float32 bytes
    slack = 32 * mem["state_shape"][0] * 8 / state  # up to 32 [B] float64 vectors (rho, norms, the guard's scales)
    assert max(mem["heun_erk_extra_state_tensors"], mem["dpmpp_2m_erk_extra_state_tensors"]) <= 1.0 + slack
    assert all(math.isfinite(v) for v in mem["peak_allocated_state_tensors"].values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_consuming_reduction_reuses_the_partner_buffers_with_identical_values(dtype):
    """ErkPair.reduce(consume=True) computes x - x_alt, f - f_alt and the inner product in the partner's own
    buffers (no new state-sized tensor) and gives the values of the allocating reduction bit for bit; where the
    dtype is not the accumulation dtype (bf16) it falls back to allocating, with the same values."""
    from erkguid.correction import ErkPair, erk_guid

    g = torch.Generator().manual_seed(3)
    x, f, xa, fa, xn = (torch.randn(5, 3, 8, 8, generator=g).to(dtype) for _ in range(5))
    plain = ErkPair.reduce(x, f, xa.clone(), fa.clone(), 0.3)
    xa2, fa2 = xa.clone(), fa.clone()
    ptr = fa2.data_ptr()
    used = ErkPair.reduce(x, f, xa2, fa2, 0.3, consume=True)
    assert plain.reduced is not None and used.reduced is not None
    for a, b in zip(plain.reduced, used.reduced):
        assert torch.equal(a, b)
    assert (used.reduced[1].data_ptr() == ptr) == (dtype != torch.bfloat16)  # f - f_alt written over f_alt
    assert torch.equal(erk_guid(xn, plain, 1.5, 0.0).x, erk_guid(xn, used, 1.5, 0.0).x)
    with torch.enable_grad():  # autograd: never in place
        fg = fa.clone().float().requires_grad_(True)
        tracked = ErkPair.reduce(x.float(), f.float(), xa.clone().float(), fg, 0.3, consume=True)
        assert tracked.reduced is not None and tracked.reduced[1].data_ptr() != fg.data_ptr()
