"""Round trips: the exact mixture denoiser written in each parameterization is recovered by its adapter."""

from __future__ import annotations

import math

import pytest
import torch

import erkguid
from erkguid.denoisers import DiscreteVPSchedule, EDMDenoiser, FlowDenoiser, LinearVPSchedule, VPDenoiser

GMM = erkguid.tree_2d()


def exact(x, sigma, class_labels=None):
    return GMM.denoise(x, sigma, class_labels=class_labels)


def col(v, x):
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def fake_edm_net(sd):
    """The raw network F that EDM preconditioning with sigma_data=sd turns into the exact D."""

    def net(x_in, c_noise, **cond):
        sigma = (4 * c_noise.double()).exp()
        x = x_in / col(1 / (sigma**2 + sd**2).sqrt(), x_in)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        return (exact(x, sigma, **cond) - col(c_skip, x) * x) / col(c_out, x)

    return net


def fake_vp_net(t_to_sigma, prediction):
    def net(x_vp, t, **cond):
        sigma = t_to_sigma(t)
        a = 1 / (1 + sigma**2).sqrt()
        x = x_vp / col(a, x_vp)
        d = exact(x, sigma, **cond)
        eps = (x - d) / col(sigma, x)
        if prediction == "epsilon":
            return eps
        if prediction == "v_prediction":
            return col(a, x) * eps - col(sigma * a, x) * d
        return d

    return net


def fake_flow_net(t_scale):
    def net(x_t, t, **cond):
        t = t.double() / t_scale
        sigma = t / (1 - t)
        x = x_t / col(1 - t, x_t)
        d = exact(x, sigma, **cond)
        return (x - d) / col(sigma, x) - d

    return net


SCHED = DiscreteVPSchedule.from_betas(1e-4, 0.02, 1000)
LIN = LinearVPSchedule(0.1, 20.0, t_scale=999.0)


def adapters():
    return {
        "edm": EDMDenoiser(fake_edm_net(0.5), sigma_data=0.5),
        "edm-sd1": EDMDenoiser(fake_edm_net(1.0), sigma_data=1.0),
        "vp-eps-discrete": VPDenoiser(fake_vp_net(SCHED.t_to_sigma, "epsilon"), SCHED, "epsilon"),
        "vp-v-discrete": VPDenoiser(fake_vp_net(SCHED.t_to_sigma, "v_prediction"), SCHED, "v_prediction"),
        "vp-x0-discrete": VPDenoiser(fake_vp_net(SCHED.t_to_sigma, "sample"), SCHED, "sample"),
        "vp-eps-linear": VPDenoiser(fake_vp_net(lambda t: LIN.t_to_sigma(t / 999.0), "epsilon"), LIN, "epsilon"),
        "vp-v-linear": VPDenoiser(fake_vp_net(lambda t: LIN.t_to_sigma(t / 999.0), "v_prediction"), LIN, "v_prediction"),
        "flow": FlowDenoiser(fake_flow_net(1000.0), t_scale=1000.0),
    }


@pytest.mark.parametrize("name", list(adapters()))
def test_adapter_recovers_exact_denoiser(name):
    d = adapters()[name]
    g = torch.Generator().manual_seed(1)
    sig = torch.tensor([0.02, 0.05, 0.3, 1.0, 4.0, 60.0], dtype=torch.float64)
    x = GMM.sample(6, seed=3, dtype=torch.float64) + sig[:, None] * torch.randn(6, 2, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    for cond in ({}, {"class_labels": labels}):
        want = exact(x, sig, **cond)
        got = d(x, sig, **cond)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    # a wrong parameterization must not pass the same check
    if name == "vp-eps-discrete":
        wrong = VPDenoiser(d.net, SCHED, "v_prediction")
        assert (wrong(x, sig) - exact(x, sig)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["edm", "vp-v-discrete", "vp-eps-linear", "flow"])
def test_sampling_through_adapter_matches_exact(name):
    sigmas = erkguid.edm_sigmas(8, 0.02, 40.0)
    x = erkguid.randn_from_seeds(range(8), (2,), sigma=40.0, dtype=torch.float64)
    for solver, ws in (("heun", 0.0), ("heun", 1.0), ("euler", 0.0)):
        ref = erkguid.sample(GMM.denoise, x, sigmas, solver=solver, w_stiff=ws)
        got = erkguid.sample(adapters()[name], x, sigmas, solver=solver, w_stiff=ws)
        torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-7)


def test_discrete_schedule_sigma_to_t():
    s = SCHED.sigmas
    t = SCHED.sigma_to_t(s[[0, 5, 499, 999]])
    torch.testing.assert_close(t, torch.tensor([0.0, 5.0, 499.0, 999.0], dtype=torch.float64))
    # geometric midpoint between training sigmas 10 and 11 -> t = 10.5 (linear in log sigma)
    mid = (s[10] * s[11]).sqrt()
    assert float(SCHED.sigma_to_t(mid[None])) == pytest.approx(10.5, abs=1e-12)
    # clamped outside the trained range
    assert SCHED.sigma_to_t(torch.tensor([1e-9, 1e9], dtype=torch.float64)).tolist() == [0.0, 999.0]
    q = DiscreteVPSchedule(SCHED.alphas_cumprod, quantize=True)
    assert float(q.sigma_to_t(mid[None])) in (10.0, 11.0)
    # diffusers' linear betas: sigma_max of DDPM ~ 157.4
    assert SCHED.sigma_max == pytest.approx(157.4, abs=0.1)


def test_linear_vp_schedule_inverse():
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    sched = LinearVPSchedule(0.1, 20.0)
    torch.testing.assert_close(sched.sigma_to_t(sched.t_to_sigma(t)), t, rtol=1e-10, atol=1e-12)
    abar = math.exp(-0.1 - 0.5 * 19.9)
    assert float(sched.t_to_sigma(torch.tensor([1.0]))) == pytest.approx(math.sqrt(1 / abar - 1), rel=1e-12)


def test_vp_input_scaled_once():
    seen = {}

    def net(x_vp, t):
        seen["x"] = x_vp
        return torch.zeros_like(x_vp)

    x = torch.full((1, 2), 3.0, dtype=torch.float64)
    VPDenoiser(net, SCHED)(x, torch.tensor([2.0], dtype=torch.float64))
    torch.testing.assert_close(seen["x"], x / math.sqrt(5.0))


def test_adapter_errors():
    with pytest.raises(ValueError, match="prediction"):
        VPDenoiser(lambda x, t: x, SCHED, "score")
    with pytest.raises(ValueError, match="sigma_data"):
        EDMDenoiser(lambda x, c: x, sigma_data=0)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        DiscreteVPSchedule([0.5, 0.9])
    with pytest.raises(ValueError, match="beta_schedule"):
        DiscreteVPSchedule.from_betas(beta_schedule="cosine")
    with pytest.raises(ValueError, match="net returned"):
        FlowDenoiser(lambda x, t: x[:, :1])(torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="one value per sample"):
        FlowDenoiser(lambda x, t: x)(torch.zeros(2, 2), torch.ones(3))
