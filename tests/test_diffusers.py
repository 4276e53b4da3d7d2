"""ERKHeunDiscreteScheduler: drop-in for HeunDiscreteScheduler in stock and hand-written pipelines."""

from __future__ import annotations

import inspect

import pytest
import torch
from diffusers import HeunDiscreteScheduler, LDMPipeline, VQModel

import erkguid
from erkguid.denoisers import DiscreteVPSchedule, VPDenoiser
from erkguid.integrations.diffusers import ERKHeunDiscreteScheduler

from ._helpers import sd_loop, tiny_unet

PREDICTIONS = ["epsilon", "v_prediction", "sample"]


UNET = tiny_unet()


def _latents(n: int = 3) -> torch.Tensor:
    return erkguid.randn_from_seeds(range(n), (3, 8, 8))


def _pair(prediction: str = "epsilon", w_stiff: float = 0.0, **kw):
    heun = HeunDiscreteScheduler(prediction_type=prediction, **kw)
    erk = ERKHeunDiscreteScheduler.from_config(heun.config, w_stiff=w_stiff, w_con=0.0)
    return heun, erk


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_strength_zero_equals_heun_exactly(prediction: str) -> None:
    heun, erk = _pair(prediction, use_karras_sigmas=prediction == "epsilon")
    x = _latents()
    want = sd_loop(heun, UNET, x, steps=5)
    got = sd_loop(erk, UNET, x, steps=5)
    assert torch.equal(got, want)
    assert len(erk.erk_history) == 3  # steps 1..3 have a pair; step 0 none, step 4 is Euler to 0
    assert all(float(h["correction_norm"].abs().max()) == 0 for h in erk.erk_history)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_strength_positive_equals_erkguid_sample(prediction: str) -> None:
    _, erk = _pair(prediction, w_stiff=3.0)
    x = _latents()
    got = sd_loop(erk, UNET, x, steps=5)
    sig = torch.cat([erk.sigmas[:1], erk.sigmas[1::2]]).double()  # de-duplicated grid, ends in 0
    den = VPDenoiser(lambda xv, t: UNET(xv, t).sample, DiscreteVPSchedule(erk.alphas_cumprod), prediction=prediction)
    with torch.no_grad():
        want = erkguid.sample(den, x * float(sig[0]), sig, solver="heun", w_stiff=3.0, w_con=0.0)
        plain = erkguid.sample(den, x * float(sig[0]), sig, solver="heun")
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)  # t: float32 (diffusers) vs float64 (adapter)
    assert (got - plain).abs().max() > 50 * (got - want).abs().max()


def test_custom_sigmas() -> None:
    erk = ERKHeunDiscreteScheduler(w_stiff=2.0, w_con=0.0)
    assert "sigmas" in inspect.signature(erk.set_timesteps).parameters  # diffusers' retrieve_timesteps checks this
    sig = erkguid.edm_sigmas(4, sigma_min=0.05, sigma_max=14.0)
    x = _latents(2)
    got = sd_loop(erk, UNET, x, sigmas=sig)
    assert torch.equal(torch.cat([erk.sigmas[:1], erk.sigmas[1::2]]), sig.float())
    assert erk.init_noise_sigma == pytest.approx(14.0)
    den = VPDenoiser(lambda xv, t: UNET(xv, t).sample, DiscreteVPSchedule(erk.alphas_cumprod))
    with torch.no_grad():
        want = erkguid.sample(den, x * 14.0, sig.float().double(), solver="heun", w_stiff=2.0)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        erk.set_timesteps(sigmas=[1.0, 2.0])
    with pytest.raises(ValueError, match="only one of"):
        erk.set_timesteps(4, sigmas=[2.0, 1.0])


def test_img2img_begin_index_and_state_reset() -> None:
    heun, erk = _pair("epsilon", w_stiff=0.0)
    image, noise = 0.5 * _latents(2), _latents(2)
    want = sd_loop(heun, UNET, noise, steps=6, begin=4, image=image)
    got = sd_loop(erk, UNET, noise, steps=6, begin=4, image=image)
    assert torch.equal(got, want)
    _, erk2 = _pair("epsilon", w_stiff=3.0)
    a = sd_loop(erk2, UNET, noise, steps=6, begin=4, image=image)
    b = sd_loop(erk2, UNET, noise, steps=6, begin=4, image=image)  # no state leaks between runs
    assert torch.equal(a, b) and not torch.equal(a, got)
    with pytest.raises(ValueError, match="second-order sub-step"):
        sd_loop(erk2, UNET, noise, steps=6, begin=3, image=image)


def test_config_round_trip(tmp_path) -> None:
    heun = HeunDiscreteScheduler(beta_start=1e-4, use_karras_sigmas=True, prediction_type="v_prediction")
    erk = ERKHeunDiscreteScheduler.from_config(heun.config, w_stiff=0.75, w_con=0.25, erk_scaling="abs")
    erk.save_pretrained(tmp_path)
    back = ERKHeunDiscreteScheduler.from_pretrained(tmp_path)
    for k, v in {"w_stiff": 0.75, "w_con": 0.25, "erk_scaling": "abs", "beta_start": 1e-4, "use_karras_sigmas": True,
                 "prediction_type": "v_prediction"}.items():
        assert back.config[k] == v
    assert back.order == 2 and len(back) == 1000
    assert type(HeunDiscreteScheduler.from_config(back.config)) is HeunDiscreteScheduler
    with pytest.raises(ValueError, match="w_stiff"):
        ERKHeunDiscreteScheduler(w_stiff=-1.0)
    with pytest.raises(ValueError, match="erk_scaling"):
        ERKHeunDiscreteScheduler(erk_scaling="cubic")


def test_stock_ldm_pipeline() -> None:
    torch.manual_seed(1)
    vq = VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8,), norm_num_groups=4,
                 down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), num_vq_embeddings=16).eval()
    calls = {"n": 0}
    UNET.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    images = {}
    for name, sched in [("heun", HeunDiscreteScheduler()), ("erk0", ERKHeunDiscreteScheduler(w_stiff=0.0)),
                        ("erk", ERKHeunDiscreteScheduler(w_stiff=3.0, w_con=0.0))]:
        pipe = LDMPipeline(vqvae=vq, unet=UNET, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        calls["n"] = 0
        images[name] = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                            output_type="np").images
        assert calls["n"] == 7  # 2N - 1 network calls, no extra NFE for ERK-Guid
    assert (images["heun"] == images["erk0"]).all()
    assert not (images["heun"] == images["erk"]).all()
