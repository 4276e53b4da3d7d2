"""Bad input to sample(): a clear TypeError/ValueError naming the argument or the step; divergence
named by the setting that caused it; warnings when ERK-Guid cannot act (issue 11, items 7 and 8)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import erkguid as eg
from erkguid.solvers import Solver, StepOut
from erkguid.tune import CountingDenoiser

TREE = eg.tree_2d()
X = eg.randn_from_seeds(range(4), (2,), sigma=80.0)
S = eg.edm_sigmas(6)


def run(**kw):
    return eg.sample(TREE, X, S, **kw)


# --------------------------------------------------------------------------- sigmas
@pytest.mark.parametrize("sigmas, err, match", [
    (None, TypeError, r"^sigmas must be a 1-D sequence"),
    ("80,0", TypeError, r"^sigmas must be a 1-D sequence.*str"),
    (["80", "0"], TypeError, r"^sigmas\[0\] must be a real number"),
    ([80.0, None, 0.0], TypeError, r"^sigmas\[1\] must be a real number"),
    ([True, False], TypeError, r"^sigmas\[0\] must be a number, got the bool"),
    (torch.tensor([80 + 0j, 0j]), TypeError, r"^sigmas must hold real noise levels"),
    (object(), TypeError, r"^sigmas must be a 1-D sequence"),
    ([1e300, 1.0, 0.0], ValueError, r"^sigmas\[0\]=1e\+300 exceeds the largest supported noise level"),
    ([math.inf, 1.0, 0.0], ValueError, r"^sigmas must be finite: sigmas\[0\] is infinite"),
    ([1.0, math.nan, 0.0], ValueError, r"^sigmas must be finite: sigmas\[1\] is NaN"),
    ([1.0, 2.0, 0.0], ValueError, r"^sigmas must be strictly decreasing: sigmas\[1\]=2.0 >= sigmas\[0\]=1.0"),
])
def test_sigmas_each_class_has_its_own_message(sigmas, err, match):
    with pytest.raises(err, match=match):
        eg.sample(TREE, X, sigmas)


def test_sigmas_read_in_float64_and_large_levels_below_the_limit_work():
    out = eg.sample(TREE, X[:2].double(), [80.0, 80.0 - 1e-6, 0.0])  # distinct in float64, equal in float32
    assert torch.isfinite(out).all()
    assert torch.isfinite(eg.sample(TREE, X[:2].double(), [1e9, 1.0, 0.0], solver="euler")).all()  # below the limit
    np_grid = eg.sample(TREE, X, S.numpy())
    assert torch.equal(np_grid, run())


# --------------------------------------------------------------------------- strengths
@pytest.mark.parametrize("w", [np.float32(1.0), np.float64(1.0), torch.tensor(1.0), torch.tensor(1.0, dtype=torch.float64),
                               np.int64(1), torch.tensor(1)])
def test_strength_numpy_and_0d_tensor_work_like_a_float(w):
    assert torch.equal(run(w_stiff=w, w_con=w * 0), run(w_stiff=1.0, w_con=0.0))


@pytest.mark.parametrize("name", ["w_stiff", "w_con"])
@pytest.mark.parametrize("value, err", [(True, TypeError), (False, TypeError), (np.bool_(True), TypeError),
                                        (torch.tensor(True), TypeError), ("1", TypeError), (torch.tensor([1.0, 2.0]), TypeError),
                                        (1 + 0j, TypeError), (math.nan, ValueError), (-0.5, ValueError)])
def test_strength_bad_values_named(name, value, err):
    with pytest.raises(err, match=f"^{name} must be"):
        run(**{name: value})


# --------------------------------------------------------------------------- solver and its options
@pytest.mark.parametrize("solver, options, err, match", [
    ("dpm2", {"r": "0.5"}, TypeError, r"solver_options\['r'\] of solver 'dpm2' must be a real number"),
    ("dpm2", {"r": True}, TypeError, r"solver_options\['r'\] of solver 'dpm2' must be a number, got the bool"),
    ("dpm2", {"r": math.inf}, ValueError, r"solver_options\['r'\] of solver 'dpm2' must be finite"),
    ("deis", {"order": 2.0}, TypeError, r"solver_options\['order'\] of solver 'deis' must be an int"),
    ("ipndm", {"order": True}, TypeError, r"solver_options\['order'\] of solver 'ipndm' must be an int"),
    ("heun_pc", {"stochastic": "no"}, TypeError, r"solver_options\['stochastic'\] of solver 'heun_pc' must be a bool"),
    ("heun_pc", {"stochastic": 0}, TypeError, r"solver_options\['stochastic'\] of solver 'heun_pc' must be a bool"),
    ("heun_pc", {"r": "0.05", "stochastic": False}, TypeError, r"solver_options\['r'\] of solver 'heun_pc'"),
    ("adasde", {"denoise_to_zero": "no"}, TypeError, r"solver_options\['denoise_to_zero'\] of solver 'adasde'"),
    ("dpm2", [("r", 0.5)], TypeError, r"^solver_options must be a mapping"),
    ("dpm2", "r", TypeError, r"^solver_options must be a mapping"),
    ("dpm2", {1: 0.5}, TypeError, r"^solver_options keys must be option names"),
    (None, None, TypeError, r"^solver must be a solver name"),
    (["heun"], None, TypeError, r"^solver must be a solver name"),
])
def test_solver_options_typed(solver, options, err, match):
    grid = eg.vp_time_uniform_sigmas(4) if solver == "adasde" else S
    with pytest.raises(err, match=match):
        eg.sample(TREE, X, grid, solver=solver, solver_options=options, seeds=range(4))


def test_solver_options_numpy_values_accepted_and_typed():
    a = run(solver="deis", solver_options={"order": np.int64(2)})
    assert torch.equal(a, run(solver="deis", solver_options={"order": 2}))
    b = run(solver="dpm2", solver_options={"r": np.float32(0.25)})
    assert torch.equal(b, run(solver="dpm2", solver_options={"r": float(np.float32(0.25))}))


# --------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("seeds, err, match", [
    ([0.5, 1.5, 2.5, 3.5], TypeError, r"^seeds\[0\] must be an integer, got 0.5"),
    ([0, 1, 2, 3.0], TypeError, r"^seeds\[3\] must be an integer"),
    ([True, False, True, False], TypeError, r"^seeds\[0\] must be an integer, got True"),
    ([[0, 1], [2, 3]], TypeError, r"^seeds\[0\] must be an integer"),
    (torch.arange(4).reshape(2, 2), ValueError, r"^seeds must be 1-D"),
    (np.arange(4).reshape(2, 2), ValueError, r"^seeds must be 1-D"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, r"^seeds must hold integers"),
    (np.array([True] * 4), TypeError, r"^seeds must hold integers"),
    ([-1, 0, 1, 2], ValueError, r"^seeds must be integers in \[0, 2\*\*64\), got -1"),
    ([2**64, 0, 1, 2], ValueError, r"^seeds must be integers in \[0, 2\*\*64\), got 18446744073709551616"),
    ("0123", TypeError, r"^seeds must be a sequence of one integer per sample"),
    (5, TypeError, r"^seeds must be a sequence of one integer per sample"),
    ([], ValueError, r"^seeds must hold at least one seed"),
])
def test_seeds_named(seeds, err, match):
    with pytest.raises(err, match=match):
        run(solver="heun_pc", seeds=seeds)
    with pytest.raises(err, match=match):
        eg.randn_from_seeds(seeds, (2,))


def test_seed_range_edges_and_integer_kinds_work():
    top = eg.randn_from_seeds([2**64 - 1, np.uint64(2**64 - 1)], (3,))
    assert torch.equal(top[0], top[1])
    a = run(solver="heun_pc", seeds=np.arange(4))
    assert torch.equal(a, run(solver="heun_pc", seeds=range(4)))
    assert torch.equal(a, run(solver="heun_pc", seeds=torch.arange(4, dtype=torch.int32)))


# --------------------------------------------------------------------------- callables and the denoiser's output
@pytest.mark.parametrize("callback", [3, "print", [print]])
def test_non_callable_callback_rejected_before_step_0(callback):
    den = CountingDenoiser(TREE)
    with pytest.raises(TypeError, match="^callback must be callable or None"):
        eg.sample(den, X, S, callback=callback)
    assert den.calls == 0


def test_non_callable_denoiser_named():
    with pytest.raises(TypeError, match="^denoiser must be callable"):
        eg.sample(3, X, S)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_denoiser_non_float_output_named_with_step(dtype):
    calls = []

    def den(x, sigma):
        calls.append(1)
        out = TREE(x, sigma)
        return out.to(dtype) if len(calls) == 3 else out

    with pytest.raises(TypeError, match=rf"^denoiser returned a tensor of dtype {dtype} at step 1 \(sigma="):
        eg.sample(den, X, S)


def test_denoiser_other_device_and_non_tensor_named():
    with pytest.raises(ValueError, match="^denoiser returned a tensor on device meta for input on cpu at step 0"):
        eg.sample(lambda x, s: torch.zeros_like(x, device="meta"), X, S)
    with pytest.raises(TypeError, match="^denoiser returned NoneType at step 0"):
        eg.sample(lambda x, s: None, X, S)
    with pytest.raises(ValueError, match=r"^denoiser returned shape \(4, 1\)"):
        eg.sample(lambda x, s: x[:, :1], X, S)


# --------------------------------------------------------------------------- divergence (item 7)
def _not_the_model(err: Exception) -> None:
    assert "check the model" not in str(err)


@pytest.mark.parametrize("solver", ["heun", "dpm2", "heun_pc"])
def test_large_w_stiff_raises_divergence_naming_the_setting_and_step(solver):
    with pytest.raises(eg.DivergenceError, match=r"^ERK-Guid diverged at step \d+ .*w_stiff=50, w_con=0, scaling='z2' "
                       rf"is too strong for solver '{solver}'") as e:
        run(solver=solver, w_stiff=50.0, seeds=range(4))
    assert isinstance(e.value, ValueError) and isinstance(e.value, eg.NonFiniteError)
    _not_the_model(e.value)


@pytest.mark.parametrize("solver", ["dpmpp_2m", "deis", "ipndm", "unipc"])
def test_multistep_blow_up_is_reported(solver):
    """w_stiff = 2 on a 7-step grid: today the multistep solvers return states hundreds of times the data's size."""
    x0 = eg.randn_from_seeds(range(32), (2,), sigma=10.0, dtype=torch.float64)
    with pytest.raises(eg.DivergenceError, match=rf"w_stiff=2, .* solver '{solver}'"):
        eg.sample(TREE, x0, eg.edm_sigmas(7, sigma_max=10.0), solver=solver, w_stiff=2.0, w_con=0.0)


def test_overflowing_correction_is_not_blamed_on_the_model():
    """Before: w_stiff=1e6 was reported as 'denoiser returned NaN/Inf ... check the model'."""
    for kw in ({"w_stiff": 1e6}, {"w_stiff": 1e30, "scaling": "alpha"}):
        with pytest.raises(eg.DivergenceError, match=r"^ERK-Guid diverged at step 1 .*w_stiff=1e\+(06|30)") as e:
            run(**kw)
        _not_the_model(e.value)
    with pytest.raises(eg.DivergenceError, match="overflowed to NaN/Inf"):
        run(w_stiff=1e30, scaling="alpha")


def test_model_overflow_says_check_the_model():
    def den(x, sigma):
        out = TREE(x, sigma)
        return out * math.inf if float(sigma[0]) < 1.0 else out

    msg = r"^denoiser returned NaN/Inf for a finite input .* at step \d+ .*check the model"
    with pytest.raises(eg.NonFiniteError, match=msg) as e:
        eg.sample(den, X, S, w_stiff=1.0, w_con=0.5)
    assert not isinstance(e.value, eg.DivergenceError)


def _custom(name, fn):
    def step(ctx, i, x, carry=None):
        den = ctx.denoise(x, ctx.sigma(i))
        return StepOut(fn(i, x, den, ctx), den, None)

    return Solver(name, step, order=1, nfe=lambda n: n)


def test_plain_solver_finite_result_is_its_own_but_nan_is_named():
    """Without an applied correction only NaN/Inf raises: w_stiff = 0 stays the plain solver, whatever its accuracy."""
    def euler_then_boom(i, x, den, ctx):
        return x * 1e4 if i == 2 else x + (ctx.sigma(i + 1) - ctx.sigma(i)) * (x - den) / ctx.sigma(i)

    out = eg.sample(TREE, X, S, solver=_custom("boom", euler_then_boom))
    assert torch.isfinite(out).all() and out.abs().max() > 1e3
    nan = _custom("nan", lambda i, x, den, ctx: x * math.nan if i == 1 else den)
    with pytest.raises(eg.DivergenceError, match=r"^the sampling state diverged at step 1 .*own step produced NaN/Inf.*'nan'"):
        eg.sample(TREE, X, S, solver=nan)
    with pytest.raises(eg.DivergenceError, match=r"^ERK-Guid diverged at step 1 .*overflowed to NaN/Inf"):
        eg.sample(TREE, X, S, check_divergence=False, w_stiff=1e30, scaling="alpha")  # off: NaN/Inf still raises


def test_check_divergence_false_keeps_the_blown_result_for_sweeps():
    """Sweeps that must show where ERK-Guid hurts turn the size limit off and get today's numbers."""
    x0 = eg.randn_from_seeds(range(32), (2,), sigma=10.0, dtype=torch.float64)
    out = eg.sample(TREE, x0, eg.edm_sigmas(7, sigma_max=10.0), solver="deis", w_stiff=2.0, check_divergence=False)
    assert torch.isfinite(out).all() and out.norm(dim=1).max() > 100  # the data's largest norm is about 1.7


def test_nan_reaching_the_denoiser_inside_a_step_is_the_steps_fault():
    def step(ctx, i, x, carry=None):
        den = ctx.denoise(x, ctx.sigma(i))
        ctx.denoise(x * math.inf * 0, ctx.sigma(i))  # an intermediate point that overflowed
        return StepOut(den, den, None)

    with pytest.raises(eg.NonFiniteError, match=r"passed a state holding NaN/Inf to the denoiser at step 0.*not the model"):
        eg.sample(TREE, X, S, solver=Solver("mid", step, order=1, nfe=lambda n: 2 * n))


@pytest.mark.parametrize("solver", sorted(eg.SOLVERS))
def test_guard_silent_and_far_below_its_limit_on_healthy_runs(solver):
    """The recommended settings on an 18-step grid: no error, no warning, peak ratio far below the limit."""
    from erkguid import _validate

    peaks = []
    finish = _validate.RunGuard.finish

    def record(self, *args):
        peaks.append(self.peak)
        finish(self, *args)

    model = eg.digits_64d()
    x0 = eg.randn_from_seeds(range(8), (64,), sigma=80.0)
    kw = {}
    if solver == "adasde":
        coef = eg.AdaSDECoefficients.neutral(eg.vp_time_uniform_sigmas(18)[:-1], gamma_max=0.0)
        grid, kw = coef.grid(), {"solver_options": {"coefficients": coef}}
    else:
        grid = eg.edm_sigmas(18)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _validate.RunGuard.finish = record
        try:
            w = 0.0 if solver == "euler" else 1.0  # euler has no pair: w_stiff > 0 warns (tested below)
            eg.sample(model, x0, grid, solver=solver, w_stiff=w, w_con=0.5, seeds=range(8), **kw)
        finally:
            _validate.RunGuard.finish = finish
    assert peaks and peaks[0] < _validate.DIVERGENCE_FACTOR / 10


# --------------------------------------------------------------------------- warnings (item 7)
def _erk_warnings(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [w for w in rec if issubclass(w.category, eg.ErkGuidWarning)]


def test_warns_once_when_the_solver_has_no_pair():
    rec = _erk_warnings(lambda: run(solver="euler", w_stiff=1.0))
    assert len(rec) == 1 and "solver 'euler' offered no embedded pair" in str(rec[0].message)
    assert rec[0].filename == __file__  # points at the caller's line
    rec = _erk_warnings(lambda: eg.sample(TREE, X, [80.0, 0.0], solver="heun", w_stiff=1.0))  # one step: no pair either
    assert len(rec) == 1 and "1-step grid" in str(rec[0].message)


def test_warns_once_when_the_gate_never_opened():
    rec = _erk_warnings(lambda: run(w_stiff=1.0, w_con=1e9))
    assert len(rec) == 1 and "gate 1[rho > w_con] stayed closed at all 4 steps" in str(rec[0].message)


def test_no_warning_when_erk_acts_or_is_off():
    assert not _erk_warnings(lambda: run(w_stiff=1.0, w_con=0.5))
    assert not _erk_warnings(lambda: run(solver="euler"))
    assert not _erk_warnings(lambda: run(w_stiff=0.0, w_con=1e9))


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="progress must be True or False"):
        eg.sample(TREE, X, S, progress="yes")
