"""Loading checkpoints offline: EDM/EDM2 pickles from a fake source checkout; tiny diffusers models."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import erkguid
from erkguid.denoisers import DiscreteVPSchedule, FlowDenoiser, VPDenoiser
from erkguid.loading import load_diffusers, load_edm_pickle

from ._helpers import forget_edm_modules, save_scheduler, tiny_unet


def test_edm_pickle_loads_and_samples(edm_checkout):
    src, pkl, net = edm_checkout
    loaded = load_edm_pickle(pkl, src, allow_pickle=True)
    assert loaded.sample_shape == (1, 4, 4)
    assert str(src) not in sys.path  # the checkout is on sys.path only while unpickling
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    sig = torch.tensor([0.1, 1.0, 10.0])
    labels = torch.tensor([0, 2, 1])
    want = net(x, sig, torch.nn.functional.one_hot(labels, 3).float())
    torch.testing.assert_close(loaded.denoiser(x, sig, class_labels=labels), want)
    assert (loaded.denoiser(x, sig, class_labels=labels) - loaded.denoiser(x, sig)).abs().max() > 0
    sigmas = erkguid.edm_sigmas(4, 0.02, 20.0)
    out = erkguid.sample(loaded.denoiser, 20.0 * x, sigmas, w_stiff=0.5, class_labels=labels)
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="class_labels must lie"):
        loaded.denoiser(x, sig, class_labels=torch.tensor([0, 3, 1]))


def test_edm_pickle_errors(edm_checkout, tmp_path):
    src, pkl, _ = edm_checkout
    with pytest.raises(FileNotFoundError, match="pickle_path"):
        load_edm_pickle(tmp_path / "nope.pkl", src, allow_pickle=True)
    with pytest.raises(FileNotFoundError, match="source_dir"):
        load_edm_pickle(pkl, tmp_path / "no-checkout", allow_pickle=True)
    bare = tmp_path / "bare"
    (bare / "torch_utils").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"not an EDM/EDM2 checkout: it has no dnnlib/"):
        load_edm_pickle(pkl, bare, allow_pickle=True)
    (bare / "dnnlib").mkdir()
    (bare / "torch_utils" / "__init__.py").write_text("")
    with pytest.raises(ValueError, match="needs module 'torch_utils.tiny'"):
        load_edm_pickle(pkl, bare, allow_pickle=True)
    forget_edm_modules()
    with pytest.raises(KeyError, match="no entry 'ema_x'"):
        load_edm_pickle(pkl, src, key="ema_x", allow_pickle=True)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable network pickle"):
        load_edm_pickle(junk, src, allow_pickle=True)


# ----------------------------------------------------------------------------- diffusers

import diffusers  # noqa: E402  (the test extra installs it)


def _randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_diffusers_unet2d_v_prediction(tmp_path):
    unet = _randomize(tiny_unet(ch=2, num_class_embeds=3), 0)
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    save_scheduler(tmp_path / "pipe" / "scheduler", _class_name="DDPMScheduler", prediction_type="v_prediction",
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    loaded = load_diffusers(tmp_path / "pipe" / "unet")
    assert loaded.kind == "v_prediction" and isinstance(loaded.denoiser, VPDenoiser)
    assert loaded.sample_shape == (2, 8, 8)
    sched = DiscreteVPSchedule.from_betas(0.00085, 0.012, 1000, "scaled_linear")
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    sig = torch.tensor([0.5, 3.0])
    labels = torch.tensor([0, 2])
    a = 1 / (1 + sig**2).sqrt()
    with torch.no_grad():
        v = unet(x * a[:, None, None, None], sched.sigma_to_t(sig.double()).float(), class_labels=labels).sample
    want = (a**2)[:, None, None, None] * x - (sig * a)[:, None, None, None] * v
    torch.testing.assert_close(loaded.denoiser(x, sig, class_labels=labels), want, rtol=1e-5, atol=1e-5)
    lo, hi = loaded.sigma_range
    sigmas = erkguid.edm_sigmas(3, max(lo, 0.05), min(hi, 10.0))
    g = erkguid.cfg(loaded.denoiser, 2.0, {"class_labels": torch.tensor([0])}, batched=True)
    out = erkguid.sample(g, x * 10, sigmas, w_stiff=0.5, class_labels=labels)
    assert out.shape == x.shape and torch.isfinite(out).all() and g.counter.rows == 2 * 2 * 5


def test_diffusers_conditional_unet_text_embeddings(tmp_path):
    unet = _randomize(diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=2, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=6, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ), 1)
    unet.save_pretrained(tmp_path / "unet")
    save_scheduler(tmp_path / "unet", _class_name="EulerDiscreteScheduler", prediction_type="epsilon",
                    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    loaded = load_diffusers(tmp_path / "unet")
    assert loaded.kind == "epsilon"
    emb = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(3))
    x = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    sig = torch.tensor([1.0, 1.0])
    d1 = loaded.denoiser(x, sig, encoder_hidden_states=emb)
    d2 = loaded.denoiser(x, sig, encoder_hidden_states=torch.zeros_like(emb))
    assert (d1 - d2).abs().max() > 1e-4  # the text embeddings reach the network
    g = erkguid.cfg(loaded.denoiser, 3.0, {"encoder_hidden_states": torch.zeros(1, 5, 6)}, batched=True)
    out = erkguid.sample(g, x * 5, erkguid.edm_sigmas(3, 0.05, 5.0), encoder_hidden_states=emb)
    assert torch.isfinite(out).all()


def test_diffusers_dit_flow(tmp_path):
    dit = _randomize(diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=4, in_channels=2, out_channels=4, num_layers=1, sample_size=4,
        patch_size=2, num_embeds_ada_norm=5, norm_num_groups=2,
    ), 2)
    dit.save_pretrained(tmp_path / "transformer")
    save_scheduler(tmp_path / "scheduler", _class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0)
    loaded = load_diffusers(tmp_path / "transformer")
    assert loaded.kind == "flow" and isinstance(loaded.denoiser, FlowDenoiser)
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    sig = torch.tensor([0.5, 2.0])
    labels = torch.tensor([1, 4])
    t = sig / (1 + sig)
    with torch.no_grad():
        v = dit(x / (1 + sig)[:, None, None, None], t * 1000, class_labels=labels).sample[:, :2]
    want = x / (1 + sig)[:, None, None, None] - t[:, None, None, None] * v
    torch.testing.assert_close(loaded.denoiser(x, sig, class_labels=labels), want, rtol=1e-5, atol=1e-5)
    out = erkguid.sample(loaded.denoiser, x * 5, erkguid.edm_sigmas(3, 0.05, 5.0), w_stiff=0.3, class_labels=labels)
    assert torch.isfinite(out).all()


def test_diffusers_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_diffusers(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"_class_name": "NotAModel"}))
    with pytest.raises(ValueError, match="not a diffusers model"):
        load_diffusers(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(FileNotFoundError, match="scheduler_config"):
        load_diffusers(tmp_path / "m", scheduler_config=tmp_path / "none.json")
