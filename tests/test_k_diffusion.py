"""k-diffusion-signature ERK samplers vs k-diffusion's own samplers (strength 0) and erkguid.sample."""

from __future__ import annotations

import pytest
import torch

import erkguid
from erkguid.integrations import k_diffusion as kd
from erkguid.schedules import edm_sigmas

from ._kdiff_ref import load_kdiff_sampling

REF = load_kdiff_sampling()
MODEL = erkguid.digits_64d(image_shape=True)
# k-diffusion name -> its reference sampler (every variant erkguid has a solver for)
PAIRS = [(name, getattr(REF, f"sample_{name}")) for name in kd.available() if hasattr(REF, f"sample_{name}")]


def _x(n: int = 6, sigma_max: float = 80.0) -> torch.Tensor:
    return erkguid.randn_from_seeds(range(n), MODEL.shape, sigma=sigma_max, dtype=torch.float64)


def test_heun_is_covered() -> None:
    assert "heun" in [p[0] for p in PAIRS]
    assert kd.sample_erk_heun is kd.SAMPLERS["erk_heun"]
    assert kd.sample_erk_heun.__name__ == "sample_erk_heun"


@pytest.mark.parametrize("name,ref", PAIRS)
def test_strength_zero_matches_k_diffusion(name: str, ref) -> None:
    sigmas = edm_sigmas(7).to(torch.float64)
    x = _x()
    torch.manual_seed(0)
    want = ref(MODEL.denoise, x.clone(), sigmas, disable=True)
    got = getattr(kd, f"sample_erk_{name}")(MODEL.denoise, x.clone(), sigmas, disable=True, w_stiff=0.0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,ref", PAIRS)
def test_callbacks_match_k_diffusion(name: str, ref) -> None:
    sigmas = edm_sigmas(5).to(torch.float64)
    x = _x(3)
    want, got = [], []
    ref(MODEL.denoise, x.clone(), sigmas, callback=want.append, disable=True)
    getattr(kd, f"sample_erk_{name}")(MODEL.denoise, x.clone(), sigmas, callback=got.append, disable=True, w_stiff=0.0)
    assert len(got) == len(want) == 5
    for a, b in zip(got, want):
        assert set(b) <= set(a)
        assert a["i"] == b["i"] and float(a["sigma"]) == float(b["sigma"]) == float(a["sigma_hat"])
        torch.testing.assert_close(a["x"], b["x"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a["denoised"], b["denoised"], rtol=1e-10, atol=1e-10)


def test_positive_strength_equals_erkguid_sample_and_differs_from_plain() -> None:
    sigmas = edm_sigmas(8)
    x = _x()
    labels = torch.arange(6) % 10
    got = kd.sample_erk_heun(MODEL.denoise, x, sigmas, extra_args={"class_labels": labels}, disable=True, w_stiff=2.0, w_con=0.1)
    want = erkguid.sample(MODEL.denoise, x, sigmas, solver="heun", w_stiff=2.0, w_con=0.1, class_labels=labels)
    assert torch.equal(got, want)
    plain = erkguid.sample(MODEL.denoise, x, sigmas, solver="heun", class_labels=labels)
    assert (got - plain).abs().max() > 1e-6


@pytest.mark.parametrize("name,ref", PAIRS)
def test_split_sigmas_match_k_diffusion(name: str, ref) -> None:
    """A grid ending above 0 (ComfyUI SplitSigmas) runs ordinary steps onto its last sigma."""
    sigmas = edm_sigmas(8)
    high, low = sigmas[:5], sigmas[4:]
    x = _x()
    want = ref(MODEL.denoise, x.clone(), high, disable=True)
    fn = getattr(kd, f"sample_erk_{name}")
    mid = fn(MODEL.denoise, x.clone(), high, disable=True, w_stiff=0.0)
    torch.testing.assert_close(mid, want, rtol=1e-10, atol=1e-10)
    calls: list[dict] = []
    nfe = {"n": 0}

    def counted(xx, s):
        nfe["n"] += 1
        return MODEL.denoise(xx, s)

    fn(counted, x.clone(), high, callback=calls.append, disable=True)
    assert [c["i"] for c in calls] == [0, 1, 2, 3]
    if name == "heun":
        assert nfe["n"] == 8  # 4 full Heun steps, nothing evaluated past the last sigma
    out = fn(MODEL.denoise, mid, low, disable=True, w_stiff=0.0)
    assert torch.isfinite(out).all() and out.shape == x.shape


def test_extra_args_and_seed_reach_the_model() -> None:
    seen: list[dict] = []

    def model(x, sigma, **kw):
        seen.append(kw)
        assert sigma.shape == (x.shape[0],)
        return MODEL.denoise(x, sigma)

    kd.sample_erk_heun(model, _x(2), edm_sigmas(3), extra_args={"seed": 5, "model_options": {}}, disable=True)
    assert seen and all(k == {"seed": 5, "model_options": {}} for k in seen)


def test_errors() -> None:
    with pytest.raises(ValueError, match="s_churn"):
        kd.sample_erk_heun(MODEL.denoise, _x(2), edm_sigmas(3), s_churn=1.0, disable=True)
    with pytest.raises(ValueError, match="strictly decreasing"):
        kd.sample_erk_heun(MODEL.denoise, _x(2), [5.0, 5.0, 0.0], disable=True)
    with pytest.raises(ValueError, match="w_stiff"):
        kd.sample_erk_heun(MODEL.denoise, _x(2), edm_sigmas(3), w_stiff=-1.0, disable=True)
    with pytest.raises(ValueError, match="name must be one of"):
        kd.make_sampler("nosuch")


# ComfyUI's own sampler names (comfy/samplers.py KSAMPLER_NAMES, read from its source): an ERK name may equal one of
# these only where the sampler is the same at w_stiff = 0 (tested above against k-diffusion for these three).
COMFY_NAMES = {"euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
               "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
               "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
               "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
               "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
               "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "uni_pc", "uni_pc_bh2"}


def test_every_solver_with_a_pair_has_a_function_equal_to_erkguid_sample() -> None:
    names = kd.available()
    assert {"heun", "dpm_2", "dpmpp_2m", "deis_rhoab", "deis_logrho", "ipndm_ab", "unipc2_bh2", "heun_pc", "adasde"} <= set(names)
    # no stock name with a different behaviour (lms: k-diffusion's sample_lms, checked equal in test_solvers.py)
    assert set(names) & COMFY_NAMES == {"heun", "dpm_2", "dpmpp_2m", "lms"}
    sigmas, x = edm_sigmas(6), _x(3)

    def comfy_model(xx, s, seed=None):  # ComfyUI passes the seed in extra_args; it also seeds the solver noise
        return MODEL.denoise(xx, s)

    for name in names:
        solver = kd.KDIFF_NAMES[name]
        opts = kd.KDIFF_OPTIONS.get(name)
        got = getattr(kd, f"sample_erk_{name}")(comfy_model, x, sigmas, extra_args={"seed": 11}, disable=True,
                                                 w_stiff=1.5, w_con=0.1)
        want = erkguid.sample(MODEL.denoise, x, sigmas, solver=solver, w_stiff=1.5, w_con=0.1, seeds=[11, 12, 13],
                              solver_options=opts)
        assert torch.equal(got, want), name
        # the default is erkguid.recommended for the solver at this list's NFE (off for the multistep solvers)
        rec = erkguid.recommended(solver, erkguid.get_solver(solver).nfe(6, opts))
        default = getattr(kd, f"sample_erk_{name}")(comfy_model, x, sigmas, extra_args={"seed": 11}, disable=True)
        want = erkguid.sample(MODEL.denoise, x, sigmas, solver=solver, seeds=[11, 12, 13], solver_options=opts, **rec)
        assert torch.equal(default, want), name


def test_one_value_list_is_a_no_op_and_increasing_lists_are_refused() -> None:
    calls: list = []
    x = _x(2)

    def model(xx, s):
        calls.append(s)
        return MODEL.denoise(xx, s)

    for one in ([80.0], torch.tensor([0.0]), edm_sigmas(4)[2:3], torch.tensor([])):  # SplitSigmas at 0 / N; denoise 0
        assert kd.sample_erk_dpmpp_2m(model, x, one, callback=calls.append, disable=True, w_stiff=1.0) is x
    assert calls == []
    flipped = edm_sigmas(4).flip(0).clone()
    flipped[0] = 1e-4  # ComfyUI FlipSigmas
    with pytest.raises(ValueError, match="sigmas increase .*FlipSigmas"):
        kd.sample_erk_heun(model, x, flipped, disable=True)
    with pytest.raises(ValueError, match="1-D"):
        kd.sample_erk_heun(model, x, torch.ones(2, 2), disable=True)


def test_eta_and_noise_sampler_are_handled_not_ignored() -> None:
    x, sigmas = _x(2), edm_sigmas(3)
    base = kd.sample_erk_heun(MODEL.denoise, x, sigmas, disable=True)
    assert torch.equal(kd.sample_erk_heun(MODEL.denoise, x, sigmas, disable=True, eta=0.0), base)
    with pytest.raises(ValueError, match="eta must be 0"):
        kd.sample_erk_heun(MODEL.denoise, x, sigmas, disable=True, eta=1.0)
    with pytest.raises(ValueError, match="noise_sampler is not supported.*seeds"):
        kd.sample_erk_heun_pc(MODEL.denoise, x, sigmas, disable=True, noise_sampler=lambda s, sn: torch.randn_like(x))
    with pytest.raises(TypeError, match="unexpected keyword"):
        kd.sample_erk_heun(MODEL.denoise, x, sigmas, disable=True, order=3)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "deis_tab", "unipc2_bh2"])
def test_split_sigma_list_continues_the_run_exactly_with_its_state(name) -> None:
    """ComfyUI SplitSigmas / KSamplerAdvanced from Python: the first part returns (x, state), the second continues the
    state (ERK pair and solver history included); the result equals one run over the whole list bit for bit."""
    fn = getattr(kd, f"sample_erk_{name}")
    sigmas, x = edm_sigmas(8), _x(3)
    kw = {"disable": True, "w_stiff": 0.5, "w_con": 0.1}
    one = fn(MODEL.denoise, x, sigmas, **kw)
    high, state = fn(MODEL.denoise, x, sigmas[:5], return_state=True, **kw)
    low = fn(MODEL.denoise, high, sigmas[4:], state=state, **kw)
    assert torch.equal(low, one)
    sink = []  # the same state continued again (not consumed: ComfyUI re-runs nodes on cached outputs), on_state
    again = fn(MODEL.denoise, high, sigmas[4:], state=state, on_state=sink.append, **kw)
    assert torch.equal(again, one) and len(sink) == 1 and torch.equal(sink[0].x, one) and sink[0].sigma == 0.0
    with pytest.raises(TypeError, match="state must be an erkguid State"):
        fn(MODEL.denoise, high, sigmas[4:], state={"x": high}, **kw)
    fresh = fn(MODEL.denoise, high, sigmas[4:], **kw)  # without the state: a new run from `high` (documented rule)
    assert not torch.equal(fresh, one)
