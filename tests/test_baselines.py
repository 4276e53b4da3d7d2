"""Baselines of App. B.6 (stiffness-driven adaptive step) and B.7 (Heun + Langevin corrector)."""

from __future__ import annotations

import pytest
import torch

import erkguid as eg


def _setup(n=24, steps=6, smax=20.0):
    model = eg.tree_2d()
    x0 = eg.randn_from_seeds(range(n), (2,), sigma=smax, dtype=torch.float64)
    return model, x0, eg.edm_sigmas(steps, sigma_max=smax)


def test_adaptive_infinite_tau_is_heun():
    model, x0, sig = _setup()
    res = eg.adaptive_heun(model, x0, sig, tau=float("inf"))
    torch.testing.assert_close(res.x, eg.sample(model, x0, sig, solver="heun"), rtol=1e-13, atol=1e-13)
    assert (res.nfe == 2 * 6 - 1).all() and (res.max_level == 0).all() and (res.substeps == 6).all()


def test_adaptive_reports_true_nfe_per_sample():
    model, x0, sig = _setup()
    rows = {"n": 0}

    def counting(x, s):
        rows["n"] += x.shape[0]  # one evaluation per row
        return model(x, s)

    res = eg.adaptive_heun(counting, x0, sig, tau=0.5, max_halvings=3)
    assert rows["n"] == int(res.nfe.sum())
    assert res.nfe.min() >= 11 and res.nfe.max() > 11  # some samples halved, some may not
    assert int(res.max_level.max()) <= 3
    assert ((res.nfe - 1) == 2 * (res.substeps - 1)).all()  # 2 per Heun sub-step + the final Euler step
    for b in (0, 7, 19):  # alone, a sample spends the same evaluations and lands on the same point
        rows["n"] = 0
        one = eg.adaptive_heun(counting, x0[b : b + 1], sig, tau=0.5, max_halvings=3)
        assert rows["n"] == int(res.nfe[b]) == int(one.nfe[0])
        torch.testing.assert_close(one.x[0], res.x[b], rtol=1e-12, atol=1e-12)


def test_adaptive_smaller_tau_spends_more():
    model, x0, sig = _setup()
    a = eg.adaptive_heun(model, x0, sig, tau=5.0).nfe.sum()
    b = eg.adaptive_heun(model, x0, sig, tau=0.5).nfe.sum()
    assert b > a
    with pytest.raises(ValueError, match="tau"):
        eg.adaptive_heun(model, x0, sig, tau=0.0)
    with pytest.raises(ValueError, match="max_halvings"):
        eg.adaptive_heun(model, x0, sig, tau=1.0, max_halvings=-1)


def test_pc_nfe_variants_and_seeds():
    model, x0, sig = _setup()
    tr = eg.Trace()
    det = eg.sample(model, x0, sig, solver="heun_pc", solver_options={"stochastic": False, "r": 0.02}, callback=tr)
    assert tr.nfe == 3 * 6 - 2 == eg.SOLVERS["heun_pc"].nfe(6)
    torch.testing.assert_close(
        eg.sample(model, x0, sig, solver="heun_pc", solver_options={"stochastic": False, "r": 0.0}),
        eg.sample(model, x0, sig, solver="heun"), rtol=1e-13, atol=1e-13,
    )
    assert not torch.equal(det, eg.sample(model, x0, sig, solver="heun"))
    with pytest.raises(ValueError, match="seeds"):
        eg.sample(model, x0, sig, solver="heun_pc")
    seeds = list(range(100, 124))
    full = eg.sample(model, x0, sig, solver="heun_pc", seeds=seeds)
    part = eg.sample(model, x0[5:9], sig, solver="heun_pc", seeds=seeds[5:9])
    torch.testing.assert_close(part, full[5:9], rtol=1e-12, atol=1e-12)
    other = eg.sample(model, x0, sig, solver="heun_pc", seeds=[s + 1000 for s in seeds])
    assert not torch.allclose(other, full)
    with pytest.raises(ValueError, match="option r"):
        eg.sample(model, x0, sig, solver="heun_pc", seeds=seeds, solver_options={"r": -1.0})
