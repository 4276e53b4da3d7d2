"""CFG / autoguidance / guidance interval / ERK-Proj on exact class-conditional mixtures."""

from __future__ import annotations

import math

import pytest
import torch

import erkguid
from erkguid import ConditionalMixture, ErkProj, Guided, Trace, autoguidance, cfg, sample, sample_erk_proj
from erkguid.correction import Estimate

GMM = erkguid.tree_2d()
NET = ConditionalMixture(GMM)
WEAK = ConditionalMixture(GMM.broadened(2.0, 0.002))
B = 6
LABELS = torch.tensor([0, 1, 0, 1, 1, 0])
SIG = torch.tensor([0.05, 0.2, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)


def noisy(b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GMM.sample(b, seed=seed, dtype=torch.float64) + SIG[:b, None] * torch.randn(b, 2, generator=g, dtype=torch.float64)


def test_cfg_equals_formula_and_batched_matches():
    x = noisy()
    d_c = GMM.denoise(x, SIG, class_labels=LABELS)
    d_u = GMM.denoise(x, SIG)
    for w in (1.0, 2.5, 4.0):
        want = d_u + w * (d_c - d_u)
        g1 = cfg(NET, w, {"class_labels": None})
        torch.testing.assert_close(g1(x, SIG, class_labels=LABELS), want, rtol=1e-12, atol=1e-12)
        g2 = cfg(NET, w, {"class_labels": torch.tensor([ConditionalMixture.NULL])}, batched=True)
        torch.testing.assert_close(g2(x, SIG, class_labels=LABELS), want, rtol=1e-12, atol=1e-12)
        two = w != 1.0
        assert (g1.counter.calls, g1.counter.rows) == ((2, 2 * B) if two else (1, B))
        assert (g2.counter.calls, g2.counter.rows) == ((1, 2 * B) if two else (1, B))
        assert g2.counter.per_sample(B) == (2.0 if two else 1.0)


def test_autoguidance_formula():
    x = noisy()
    main = GMM.denoise(x, SIG, class_labels=LABELS)
    weak = GMM.broadened(2.0, 0.002).denoise(x, SIG, class_labels=LABELS)
    ag = autoguidance(NET, WEAK, 2.0)
    torch.testing.assert_close(ag(x, SIG, class_labels=LABELS), weak + 2.0 * (main - weak), rtol=1e-12, atol=1e-12)


def test_guidance_interval_per_sample_and_counts():
    x = noisy()
    g = cfg(NET, 3.0, {"class_labels": None}, interval=(0.3, 2.0))
    out = g(x, SIG, class_labels=LABELS)
    inside = (SIG >= 0.3) & (SIG <= 2.0)
    full = cfg(NET, 3.0, {"class_labels": None})(x, SIG, class_labels=LABELS)
    plain = GMM.denoise(x, SIG, class_labels=LABELS)
    torch.testing.assert_close(out[inside], full[inside], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[~inside], plain[~inside], rtol=1e-12, atol=1e-12)
    assert g.counter.rows == B + int(inside.sum())
    # a sample's value does not depend on the rest of the batch
    one = cfg(NET, 3.0, {"class_labels": None}, interval=(0.3, 2.0))(x[2:3], SIG[2:3], class_labels=LABELS[2:3])
    torch.testing.assert_close(one, out[2:3], rtol=1e-12, atol=1e-12)


def guided_drift(g, x, s, labels):
    sv = torch.full((x.shape[0],), s, dtype=torch.float64)
    return (x - g(x, sv, class_labels=labels)) / s


def test_erk_guid_on_guided_drift_heun_matches_eq_56_58():
    g = cfg(NET, 2.0, {"class_labels": None})
    sigmas = erkguid.edm_sigmas(4, 0.02, 20.0)
    x0 = erkguid.randn_from_seeds(range(4), (2,), sigma=20.0, dtype=torch.float64)
    lab = LABELS[:4]
    trace = Trace()
    w_stiff = 0.3
    out = sample(g, x0, sigmas, w_stiff=w_stiff, class_labels=lab, callback=trace)
    # hand-written Heun + ERK-Guid on f^w (Eq. 55-58)
    s = sigmas.tolist()
    x, buf = x0.clone(), None
    for i in range(len(s) - 1):
        f = guided_drift(g, x, s[i], lab)
        h = s[i] - s[i + 1]
        x_e = x - h * f
        if s[i + 1] == 0:
            x = x_e
            break
        f_e = guided_drift(g, x_e, s[i + 1], lab)
        x_next = x - h * 0.5 * (f + f_e)
        if buf is not None:
            df, dx = f - buf[1], x - buf[0]
            rho = df.norm(dim=1) / dx.norm(dim=1)
            v = df / df.norm(dim=1, keepdim=True)
            torch.testing.assert_close(trace.rho[i].double(), rho.float().double(), rtol=1e-5, atol=0)
            z = w_stiff * h * rho
            x_next = x_next - (h * z**2 * (f * v).sum(1))[:, None] * v
        buf = (x_e, f_e)
        x = x_next
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("solver", sorted(erkguid.SOLVERS))
def test_erk_guid_with_guidance_every_solver(solver):
    g = autoguidance(NET, WEAK, 2.0)
    sigmas = erkguid.edm_sigmas(6, 0.02, 20.0)
    x = erkguid.randn_from_seeds(range(4), (2,), sigma=20.0, dtype=torch.float64)
    kw = {"class_labels": LABELS[:4], "seeds": list(range(4))}
    plain = sample(g, x, sigmas, solver=solver, **kw)
    guided = sample(g, x, sigmas, solver=solver, w_stiff=0.5, **kw)
    assert torch.isfinite(guided).all()
    if erkguid.get_solver(solver).name != "euler":  # Euler has no embedded pair
        assert (guided - plain).abs().max() > 1e-8


def test_erk_proj_projection_formula():
    g = autoguidance(NET, WEAK, 3.0)
    x = noisy(4)
    s = SIG[:4]
    proj = ErkProj(g, w_proj=0.7)
    v = torch.nn.functional.normalize(torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64), dim=1)
    rho = torch.tensor([0.0, 0.5, 2.0, 50.0], dtype=torch.float64)
    est = Estimate(rho=rho, v=v)
    got = proj(x, s, estimate=est, class_labels=LABELS[:4])
    main = NET(x, s, class_labels=LABELS[:4])
    weak = WEAK(x, s, class_labels=LABELS[:4])
    f_main, f_ref = (x - main) / s[:, None], (x - weak) / s[:, None]
    gvec = f_main - f_ref  # Eq. 54
    eta = torch.exp(-0.7 * rho)[:, None]  # Eq. 59
    g_hat = eta * gvec + (1 - eta) * (gvec * v).sum(1, keepdim=True) * v  # Eq. 60
    f_w = f_main + 2.0 * g_hat  # Eq. 61
    torch.testing.assert_close((x - got) / s[:, None], f_w, rtol=1e-10, atol=1e-10)
    assert math.isclose(float(proj.eta(est)[0]), 1.0)
    torch.testing.assert_close(proj(x, s, class_labels=LABELS[:4]), g(x, s, class_labels=LABELS[:4]), rtol=0, atol=0)


def test_erk_proj_runs_are_independent_and_per_sample():
    g = autoguidance(NET, WEAK, 2.5)
    sigmas = erkguid.edm_sigmas(8, 0.02, 20.0)
    x = erkguid.randn_from_seeds(range(6), (2,), sigma=20.0, dtype=torch.float64)
    a = sample_erk_proj(g, x, sigmas, w_stiff=0.5, class_labels=LABELS)
    b = sample_erk_proj(g, x, sigmas, w_stiff=0.5, class_labels=LABELS)
    assert torch.equal(a, b)
    part = sample_erk_proj(g, x[:3], sigmas, w_stiff=0.5, class_labels=LABELS[:3])
    torch.testing.assert_close(part, a[:3], rtol=1e-12, atol=1e-12)
    plain = sample(g, x, sigmas, w_stiff=0.5, class_labels=LABELS)
    assert (a - plain).abs().max() > 1e-6  # the projection acts
    no_proj = sample_erk_proj(g, x, sigmas, w_stiff=0.5, w_proj=0.0, class_labels=LABELS)
    torch.testing.assert_close(no_proj, plain, rtol=1e-12, atol=1e-12)  # eta = 1: plain guidance
    proj = ErkProj(g, 0.5)  # a layer holds no per-run state: reusing it across runs and batches is safe
    assert torch.equal(sample(proj, x, sigmas, w_stiff=0.5, class_labels=LABELS), a)
    assert torch.equal(sample(proj, x[:3], sigmas, w_stiff=0.5, class_labels=LABELS[:3]), part)
    with pytest.raises(ValueError, match="estimate for shape"):
        proj(x[:2], sigmas[1:2].expand(2), estimate=erkguid.estimate(_pair(x)), class_labels=LABELS[:2])
    state = erkguid.Run(proj, x, sigmas[:4], w_stiff=0.5, extra_args={"class_labels": LABELS}).finish()
    assert torch.equal(sample(proj, state, sigmas[3:], w_stiff=0.5, class_labels=LABELS), a)  # split: same result


def test_guided_reference_solve_and_nfe():
    g = cfg(NET, 2.0, {"class_labels": None})
    x = erkguid.randn_from_seeds(range(3), (2,), sigma=10.0, dtype=torch.float64)
    ref = erkguid.reference_solve(g, x, 10.0, rtol=1e-6, class_labels=LABELS[:3])
    assert torch.isfinite(ref.x).all()
    g.counter.reset()
    trace = Trace()
    sample(g, x, erkguid.edm_sigmas(5, 0.02, 10.0), class_labels=LABELS[:3], callback=trace)
    assert trace.nfe == 9 and g.counter.calls == 18 and g.counter.per_sample(3) == 18.0


def test_guidance_errors():
    with pytest.raises(ValueError, match="interval"):
        Guided(NET, None, 2.0, interval=(1.0, 0.5))
    with pytest.raises(ValueError, match="batched=True"):
        Guided(NET, WEAK, 2.0, batched=True)
    with pytest.raises(ValueError, match="w must be"):
        Guided(NET, None, float("nan"))
    with pytest.raises(ValueError, match="tensor conditioning 'class_labels'"):
        cfg(NET, 2.0, {"class_labels": None}, batched=True)(noisy(), SIG, class_labels=LABELS)
    with pytest.raises(ValueError, match="w_proj"):
        ErkProj(cfg(NET, 2.0, {"class_labels": None}), -1.0)
    with pytest.raises(TypeError, match="Guided"):
        ErkProj(NET, 1.0)
    with pytest.raises(ValueError, match="component labels"):
        ConditionalMixture(erkguid.isotropic_gaussian())


def _pair(x):
    return erkguid.ErkPair(x, x.flip(0), x + 1.0, x.flip(0) * 2.0, 0.5)


def test_erk_proj_receives_the_previous_steps_estimate_from_plain_guided_drift_eq_56_57():
    g = cfg(NET, 3.0, {"class_labels": None})
    sigmas = erkguid.edm_sigmas(5, 0.02, 20.0)
    x0 = erkguid.randn_from_seeds(range(4), (2,), sigma=20.0, dtype=torch.float64)
    lab = LABELS[:4]
    seen = []

    class Recording(ErkProj):
        def layer_call(self, x, sigma, estimate, **cond):
            seen.append(estimate)
            return super().layer_call(x, sigma, estimate, **cond)

    steps = list(erkguid.Run(Recording(g, 2.0), x0, sigmas, extra_args={"class_labels": lab}))
    s = sigmas.tolist()

    def plain_estimate(x_i, x_e, sig):  # Eq. 56-57 on the plain guided drift f^w of Eq. 55 at the pair's two states
        df = guided_drift(g, x_i, sig, lab) - guided_drift(g, x_e, sig, lab)
        return df.norm(dim=1) / (x_i - x_e).norm(dim=1), df / df.norm(dim=1, keepdim=True)

    # Heun evaluates twice per step (once on the last); steps 0-1 run unprojected (no pair before step 1)
    assert len(seen) == 2 * 5 - 1 and seen[:4] == [None] * 4
    # step 1's pair: x_1 against the Euler point of step 0; its estimate feeds both evaluations of step 2
    x_e1 = x0 - (s[0] - s[1]) * guided_drift(g, x0, s[0], lab)
    rho1, v1 = plain_estimate(steps[0].x, x_e1, s[1])
    # step 2's pair: x_2 against step 1's Euler point (step 1 was unprojected); it feeds step 3
    x_e2 = steps[0].x - (s[1] - s[2]) * guided_drift(g, steps[0].x, s[1], lab)
    rho2, v2 = plain_estimate(steps[1].x, x_e2, s[2])
    for k, (rho, v) in ((2, (rho1, v1)), (3, (rho2, v2))):
        for e in seen[2 * k:2 * k + 2]:
            torch.testing.assert_close(e.rho, rho, rtol=1e-10, atol=0)
            torch.testing.assert_close(e.v, v, rtol=1e-10, atol=1e-12)
    # from step 2 on the solver integrates the projected drift, so its own pair differs from the plain one
    assert not torch.allclose(steps[2].estimate().rho, seen[8].rho, rtol=1e-6, atol=0)


def test_guidance_experiment_small():
    from erkguid.experiments.guidance import VARIANTS, format_table, run_guidance

    res = run_guidance(None, num_samples=16, steps=(3,), ref_rtol=1e-3, progress=False)
    rows = res["rows"]
    assert len(rows) == 2 * len(VARIANTS)
    for r in rows:  # Heun: 2N - 1 loop calls; both branches evaluated at every call (no interval)
        assert r["nfe"] == 5 and r["nfe_network"] == 10.0
        assert r["err_mean"] > 0 and math.isfinite(r["nll"])
    assert "files" not in res
    assert "| CFG | +ERK-Proj | 3 |" in format_table(res)


def test_batched_interval_and_counted():
    x = noisy()
    inside = (SIG >= 0.3) & (SIG <= 2.0)
    g = cfg(NET, 3.0, {"class_labels": torch.tensor(ConditionalMixture.NULL)}, interval=(0.3, 2.0), batched=True)
    want = cfg(NET, 3.0, {"class_labels": None}, interval=(0.3, 2.0))(x, SIG, class_labels=LABELS)
    torch.testing.assert_close(g(x, SIG, class_labels=LABELS), want, rtol=1e-12, atol=1e-12)
    assert (g.counter.calls, g.counter.rows) == (1, B + int(inside.sum()))
    c = erkguid.Counted(GMM.denoise)
    sample(c, x, erkguid.edm_sigmas(3, 0.05, 5.0))
    assert (c.counter.calls, c.counter.rows) == (5, 5 * B)
