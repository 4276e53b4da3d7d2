"""Property-based tests over sample()'s arguments (issue 11, item 10).

Every input either runs to a finite result shaped and typed like ``x`` or raises a ValueError/TypeError
whose message names an argument that was wrong (or, for a valid value that can still fail - a strength
that diverges, a solver option out of range, a stochastic solver without seeds - that argument).
Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import erkguid as eg

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings = hypothesis.given, hypothesis.settings

NAMES = {
    "x": r"\bx\b",
    "sigmas": r"\bsigmas\b",
    "solver": r"\bsolver\b",
    "w_stiff": r"\bw_stiff\b",
    "w_con": r"\bw_con\b",
    "scaling": r"\bscaling\b",
    "solver_options": r"\bsolver[_ ]options?\b",
    "seeds": r"\bseeds\b",
}
MODELS = {"tree2d": eg.tree_2d(), "iso3": eg.isotropic_gaussian(dim=3, std=0.5, mean=0.25)}
DIM = {"tree2d": 2, "iso3": 3}
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(hypothesis.HealthCheck))


@st.composite
def xs(draw, dim, broken):
    b = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    x = eg.randn_from_seeds(range(b), (dim,), sigma=draw(st.sampled_from([1.0, 5.0, 80.0])), dtype=torch.float64)
    if not broken:
        return x.to(dtype)
    return draw(st.sampled_from([
        torch.zeros(b, dim + 1, dtype=dtype), x.to(torch.int64), x.to(dtype) * math.nan, torch.zeros(0, dim), x.tolist(),
        torch.tensor(1.0), torch.zeros(b, dim, 2), None, x.to(torch.complex64)]))


@st.composite
def grids(draw, broken):
    if broken:
        return draw(st.sampled_from(
            [None, "80,0", ["80", "0"], [1e300, 1.0, 0.0], [math.inf, 1.0, 0.0], [math.nan, 0.0], [1.0, 2.0, 0.0],
             [1.0, 1.0, 0.0], [80.0, 1.0], [1.0, -0.5, 0.0], [[80.0, 0.0]], [], [0.0], [True, False], object(), 3.0]))
    n = draw(st.integers(1, 6))
    smax = draw(st.sampled_from([0.5, 2.0, 80.0]))
    g = eg.get_sigmas(draw(st.sampled_from(["edm", "logsnr", "time_uniform"])), n, sigma_max=smax, sigma_min=0.002)
    return draw(st.sampled_from([g, g.tolist(), g.numpy(), g.float()]))


def strengths(broken):
    if broken:
        return st.sampled_from([True, False, np.bool_(True), torch.tensor(True), math.nan, math.inf, -1.0, -1e-9, "1",
                                torch.tensor([1.0, 2.0]), None, 1j, [1.0]])
    return st.one_of(st.sampled_from([0.0, 0.5, 1.0, 50.0, 1e6, 1e30]), st.floats(0, 4), st.integers(0, 2),
                     st.sampled_from([np.float32(0.5), np.float64(1.0), np.int64(1), torch.tensor(0.5),
                                      torch.tensor(1.0, dtype=torch.float64)]))


OPTION_VALUES = [0.0, 0.3, 0.5, 1.0, 1.5, -1.0, 1, 2, 3, 4, 5, True, False, "no", "0.5", None, 2.0, math.nan,
                 np.float32(0.5), np.int64(2)]


@st.composite
def options(draw, solver, broken):
    spec = eg.SOLVERS.get(solver) if isinstance(solver, str) else None
    typed = sorted(k for k in spec.options if k != "coefficients") if spec is not None else []
    if not broken:
        return draw(st.sampled_from([None, {}] + ([{k: spec.options[k]} for k in typed])))
    if typed and draw(st.booleans()):
        return {draw(st.sampled_from(typed)): draw(st.sampled_from(OPTION_VALUES))}  # maybe fine, maybe named
    return draw(st.sampled_from(["r", [("r", 0.5)], 3, {1: 2}, {"bogus": 1}]))


def seed_lists(b, broken):
    if broken:
        return st.sampled_from([[0.5] * b, [True] * b, [[0]] * b, [-1] * b, [2**64] * b, list(range(b + 1)), "0", 5,
                                torch.zeros(b), torch.zeros(b, 1, dtype=torch.long)])
    return st.one_of(st.none(), st.lists(st.integers(0, 2**64 - 1), min_size=b, max_size=b))


ARGS = ["x", "sigmas", "solver", "w_stiff", "w_con", "scaling", "solver_options", "seeds"]


@pytest.mark.filterwarnings("ignore::erkguid.ErkGuidWarning")
@given(data=st.data())
@SETTINGS
def test_any_arguments_finite_result_or_named_error(data):
    """At most one argument is garbage (chosen first); every other one is a valid value of its kind."""
    broken = data.draw(st.sampled_from([None, None, None, *ARGS]), label="broken")
    model_name = data.draw(st.sampled_from(sorted(MODELS)))
    x = data.draw(xs(DIM[model_name], broken == "x"))
    sigmas = data.draw(grids(broken == "sigmas"))
    solver = data.draw(st.sampled_from(["rk4", "", None, 3, ["heun"], "HEUN"]) if broken == "solver"
                       else st.sampled_from(sorted(eg.SOLVERS)))
    w_stiff = data.draw(strengths(broken == "w_stiff"))
    w_con = data.draw(strengths(broken == "w_con"))
    scaling = data.draw(st.sampled_from(["cubic", None, ["z2"], 2, "Z2"]) if broken == "scaling"
                        else st.sampled_from(eg.SCALINGS))
    opts = data.draw(options(solver, broken == "solver_options"))
    b = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim >= 1 else 1
    seeds = data.draw(seed_lists(b, broken == "seeds"))
    may_fail = {broken} - {None}
    if broken != "w_stiff" and float(w_stiff) > 0:
        may_fail |= {"w_stiff"}  # a valid strength can still diverge (named in the DivergenceError)
    if solver in ("heun_pc", "adasde") and seeds is None:
        may_fail |= {"seeds"}  # stochastic solvers need seeds
    if solver == "adasde":
        may_fail |= {"sigmas"}  # a one-step grid has no level for the coefficients
    try:
        out = eg.sample(MODELS[model_name], x, sigmas, solver=solver, w_stiff=w_stiff, w_con=w_con, scaling=scaling,
                        solver_options=opts, seeds=seeds)
    except (TypeError, ValueError) as e:
        msg = str(e)
        hypothesis.event(f"{type(e).__name__} naming {broken or 'a valid setting'}")
        assert may_fail, f"valid arguments raised {type(e).__name__}: {msg}"
        assert any(re.search(NAMES[n], msg) for n in may_fail), f"{msg!r} names none of {sorted(may_fail)}"
        return
    assert broken in (None, "w_stiff", "w_con", "solver_options"), f"garbage {broken} was accepted"
    assert broken not in ("w_stiff", "w_con"), f"garbage {broken}={w_stiff if broken == 'w_stiff' else w_con!r} was accepted"
    assert isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    hypothesis.event("finite result")
