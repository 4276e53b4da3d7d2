"""The step engine: positive-end grids, continuation, exact NFE for every option, finiteness policy and syncs."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch

import erkguid as eg
from erkguid.solvers import SOLVERS

from ._kdiff_ref import load_kdiff_sampling

DETERMINISTIC = ["euler", "heun", "dpm2", "dpmpp_2m", "deis", "ipndm", "unipc"]


def _x0(b=6, sigma=10.0):
    return eg.randn_from_seeds(range(b), (2,), sigma=sigma, dtype=torch.float64)


def _states(model, x0, sig, solver, **kw):
    """The state after every step of one run (from the callback)."""
    got = []
    eg.sample(model, x0, sig, solver=solver, callback=lambda info: got.append(info["x"]), **kw)
    return got


# ----------------------------------------------------------------------------- grids ending above 0
@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_grid_ending_at_sigma_min_is_the_one_run_state(solver):
    """A grid ending at sigma_min > 0 returns the state the full run has at sigma_min, ERK-Guid included."""
    model = eg.tree_2d()
    full = eg.edm_sigmas(7, sigma_max=10.0)
    x0 = _x0()
    for w in (0.0, 1.0):  # structure only: w=1 may diverge on the multistep solvers, so the guard is off
        at_min = _states(model, x0, full, solver, w_stiff=w, check_divergence=False)[-2]
        got = eg.sample(model, x0, full[:-1], solver=solver, w_stiff=w, check_divergence=False)
        assert torch.equal(got, at_min), (solver, w)


@pytest.mark.parametrize("ours,theirs", [("heun", "sample_heun"), ("dpm2", "sample_dpm_2"), ("dpmpp_2m", "sample_dpmpp_2m")])
def test_grid_ending_above_zero_matches_k_diffusion(ours, theirs):
    kd = load_kdiff_sampling()
    model = eg.tree_2d()
    sig = eg.edm_sigmas(9, sigma_max=10.0)[:-1]  # ends at sigma_min = 0.002: the last step is an ordinary step
    x0 = _x0(8)
    ref = getattr(kd, theirs)(model, x0.clone(), sig, disable=True)
    got = eg.sample(model, x0, sig, solver=ours)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- continuation
@pytest.mark.parametrize("solver", [*DETERMINISTIC, "heun_pc"])
@pytest.mark.parametrize("split", [1, 3, 5])
def test_split_grid_continues_bit_identically(solver, split):
    """sigmas[:k+1] then sigmas[k:] (ComfyUI SplitSigmas) gives exactly one run: carry, ERK partner, noise."""
    model = eg.tree_2d()
    sig = eg.edm_sigmas(7, sigma_max=10.0)
    x0 = _x0()
    kw = {"w_stiff": 1.0, "w_con": 0.1, "seeds": list(range(6)), "check_divergence": False}  # structure only
    one = eg.sample(model, x0, sig, solver=solver, **kw)
    first = eg.Run(model, x0, sig[: split + 1], solver=solver, **kw)
    state = first.finish()
    assert state.sigma == float(sig[split]) and state.nfe == SOLVERS[solver].nfe(split, to_zero=False)
    kw.pop("seeds")
    two = eg.sample(model, state, sig[split:], solver=solver, **kw)
    assert torch.equal(one, two)


def test_continuation_errors_are_named():
    model = eg.tree_2d()
    sig = eg.edm_sigmas(5, sigma_max=10.0)
    state = eg.Run(model, _x0(), sig[:3]).finish()
    with pytest.raises(ValueError, match="same solver"):
        eg.sample(model, state, sig[2:], solver="dpm2")
    with pytest.raises(ValueError, match="must start at the level the state is at"):
        eg.sample(model, state, sig[3:])
    with pytest.raises(ValueError, match="seeds"):
        eg.sample(model, state, sig[2:], seeds=range(6))
    run = eg.Run(model, _x0(), sig)
    run.finish()
    with pytest.raises(RuntimeError, match="iterated once"):
        run.finish()


# ----------------------------------------------------------------------------- NFE: one notion, exact
def _option_grid(name):
    neutral = eg.AdaSDECoefficients.neutral(eg.vp_time_uniform_sigmas(5)[:-1], gamma_max=0.0, afs=False)
    with_afs = eg.AdaSDECoefficients.random(eg.vp_time_uniform_sigmas(5)[:-1], seed=3, gamma_max=0.01, afs=True)
    grids = {
        "dpm2": {"r": [0.5, 0.3]},
        "deis": {"order": [1, 2, 3, 4], "mode": ["tab", "rhoab", "logrho"], "lower_order_final": [False, True]},
        "lms": {"order": [1, 2, 3, 4]},
        "unipc": {"order": [1, 2, 3], "variant": ["bh1", "bh2"]},
        "ipndm": {"order": [1, 2, 3, 4]},
        "heun_pc": {"r": [0.0, 0.05], "stochastic": [True, False]},
        "adasde": {"coefficients": [None, neutral, with_afs], "denoise_to_zero": [False, True], "differentiable": [False, True]},
    }
    g = grids.get(name, {})
    assert set(g) == set(SOLVERS[name].options), f"test the options of {name}: {sorted(SOLVERS[name].options)}"
    return [dict(zip(g, vals)) for vals in itertools.product(*g.values())]


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_declared_nfe_equals_measured_for_every_option(name):
    model = eg.tree_2d()
    for opts in _option_grid(name):
        grids = [eg.vp_time_uniform_sigmas(5)] if name == "adasde" else [eg.edm_sigmas(6, sigma_max=10.0)]
        if name != "adasde":
            grids.append(grids[0][:-1])  # ending above 0
        for sig in grids:
            calls = []

            def den(x, s, calls=calls):
                calls.append(1)
                return model(x, s)

            steps = list(eg.Run(den, _x0(), sig, solver=name, solver_options=opts, seeds=range(6)))
            to_zero = float(sig[-1]) == 0
            declared = SOLVERS[name].nfe(len(sig) - 1, opts, to_zero=to_zero)
            assert steps[-1].nfe == len(calls) == declared, (name, opts, to_zero)


def test_adasde_without_afs_counts_every_evaluation():
    """The neutral default (DPM-Solver-2 values, no analytic first step) spends 2 per step onto a positive level."""
    assert SOLVERS["adasde"].nfe(4) == 6
    tr = eg.Trace()
    eg.sample(eg.tree_2d(), _x0(), eg.vp_time_uniform_sigmas(4), solver="adasde", callback=tr)
    assert tr.nfe == 6


# ----------------------------------------------------------------------------- finiteness and host syncs
SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "numpy")


@pytest.fixture
def sync_counter(monkeypatch):
    """Counts Python-level reads of tensor values (each a device-to-host sync on an accelerator)."""
    count = {"n": 0}
    for name in SYNC_METHODS:
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, **k):
            count["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return count


def _gauss(x, s):
    return x / (1 + s[:, None] ** 2)  # D of N(0, I): pure tensor ops, no syncs of its own


@pytest.mark.parametrize("solver", [s for s in sorted(SOLVERS) if s != "adaptive"])
@pytest.mark.parametrize("policy,per_step", [("step", 1), ("end", 0), ("off", 0)])
def test_at_most_one_sync_per_step(sync_counter, solver, policy, per_step):
    sig = eg.vp_time_uniform_sigmas(6) if solver == "adasde" else eg.edm_sigmas(6, sigma_max=10.0)
    run = eg.Run(_gauss, _x0(), sig, solver=solver, w_stiff=1.0, check_finite=policy, seeds=range(6))
    sync_counter["n"] = 0
    for _ in run:
        pass
    assert sync_counter["n"] <= per_step * 6 + (policy == "end")


def test_non_finite_is_named_by_step_and_source():
    def nan_below(x, s):
        out = _gauss(x, s)
        return out * float("nan") if float(s[0]) < 1.0 else out

    sig = eg.edm_sigmas(6, sigma_max=10.0)
    first_bad = int((sig < 1.0).nonzero()[0])  # the first step evaluating below sigma = 1 (Heun's 2nd evaluation)
    for policy in ("step", "end"):
        with pytest.raises(eg.NonFiniteError, match=rf"denoiser returned NaN/Inf for a finite input .* at step {first_bad - 1} "):
            eg.sample(nan_below, _x0(), sig, check_finite=policy)

    def overflowing_step(ctx, i, x, carry=None):  # finite model output, the step's arithmetic overflows
        d = ctx.denoise(x, ctx.sigma(i))
        return eg.StepOut(x * (1e308 if i == 2 else 1.0), d, None)

    bad = eg.Solver("overflow", overflowing_step, order=1, nfe=lambda n, options, to_zero: n)
    for policy in ("step", "end"):
        # "step": the divergence guard reads the same sync and names the solver's own step; "end": the engine's flag
        with pytest.raises(eg.NonFiniteError, match="(solver state became NaN/Inf|state diverged) at step 2 .*"
                                                    "(own step produced NaN/Inf|->)"):
            eg.sample(_gauss, _x0(), sig, solver=bad, check_finite=policy)
    out = eg.sample(nan_below, _x0(), sig, check_finite="off")  # the user opted out of every check
    assert out.isnan().all()
    with pytest.raises(ValueError, match="check_finite"):
        eg.sample(_gauss, _x0(), sig, check_finite="sometimes")


# ----------------------------------------------------------------------------- conditioning keywords
def test_extra_args_and_keywords_share_one_namespace_checked():
    m = eg.tree_2d()
    x = _x0(4)
    lab = torch.tensor([0, 1, 0, 1])
    sig = eg.edm_sigmas(4, sigma_max=10.0)
    a = eg.sample(m, x, sig, class_labels=lab)
    assert torch.equal(a, eg.sample(m, x, sig, extra_args={"class_labels": lab}))
    with pytest.raises(ValueError, match="class_labels"):
        eg.sample(m, x, sig, extra_args={"class_labels": lab}, class_labels=lab)


# ----------------------------------------------------------------------------- dependencies
def test_import_does_not_pull_plotting_scipy_or_cli():
    code = "import sys, erkguid; print(sorted(m for m in ('matplotlib', 'scipy', 'click') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


# ----------------------------------------------------------------------------- the contributor recipe
def test_contributing_recipe_adds_a_solver_in_about_15_lines(monkeypatch):
    """CONTRIBUTING.md's "add a solver with its ERK pair" block runs, stays short and gives a working solver."""
    from pathlib import Path

    import erkguid.solvers.base as base

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    block = text.split("## Add a solver with its ERK pair", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert sum(1 for ln in block.splitlines() if ln.strip()) <= 16
    monkeypatch.setattr(base, "SOLVERS", dict(base.SOLVERS))  # register into a throwaway registry
    exec(compile(block, "CONTRIBUTING.md", "exec"), {})
    model, sig, x0 = eg.tree_2d(), eg.edm_sigmas(6, sigma_max=10.0), _x0()
    tr0, tr1 = eg.Trace(), eg.Trace()
    plain = eg.sample(model, x0, sig, solver="midpoint", callback=tr0)
    guided = eg.sample(model, x0, sig, solver="midpoint", w_stiff=1.0, callback=tr1)
    assert tr0.nfe == tr1.nfe == base.SOLVERS["midpoint"].nfe(6) == 11
    assert torch.isfinite(tr1.rho[:-1]).all() and not torch.equal(plain, guided)
    gauss = eg.isotropic_gaussian(dim=4, std=0.5)  # second order on the closed-form ODE, at sigma_min
    xg = eg.randn_from_seeds(range(8), (4,), sigma=5.0, dtype=torch.float64)
    exact = gauss.ode_solution(xg, 5.0, 0.1)
    errs = [float((eg.sample(gauss, xg, eg.edm_sigmas(n, 0.1, 5.0)[:-1], solver="midpoint") - exact).norm(dim=1).max())
            for n in (16, 32, 64)]
    slope = -float(torch.tensor(errs).log().diff().mean() / torch.tensor(2.0).log())
    assert slope > 1.65, errs  # at least the declared order 2


def test_console_script_names_the_missing_cli_extra():
    code = "import sys; sys.modules['click'] = None; sys.argv = ['erkguid', '--help']; from erkguid._console import main; main()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1 and "pip install 'erkguid[cli]'" in done.stderr and "'click'" in done.stderr
