"""The ComfyUI node module with ``comfy.samplers`` stubbed by the KSAMPLER calling contract."""

from __future__ import annotations

import sys
import types

import pytest
import torch

import erkguid
from erkguid.integrations import comfyui
from erkguid.integrations import k_diffusion as kd
from erkguid.schedules import edm_sigmas

MODEL = erkguid.digits_64d(image_shape=True)


class StubKSAMPLER:
    """Mirrors comfy.samplers.KSAMPLER: stores (fn, extra_options) and calls fn like ComfyUI does."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None) -> None:
        self.sampler_function = sampler_function
        self.extra_options = extra_options or {}

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, disable_pbar=False):
        total = len(sigmas) - 1
        k_callback = None if callback is None else (lambda d: callback(d["i"], d["denoised"], d["x"], total))
        return self.sampler_function(model_wrap, noise, sigmas, extra_args=extra_args, callback=k_callback,
                                     disable=disable_pbar, **self.extra_options)


@pytest.fixture
def comfy_stub(monkeypatch):
    comfy = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER = StubKSAMPLER
    comfy.samplers = samplers
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.samplers", samplers)
    return samplers


def test_module_imports_without_comfy() -> None:
    assert "comfy" not in sys.modules
    spec = comfyui.ERKGuidSampler.INPUT_TYPES()["required"]
    assert "heun" in spec["sampler"][0]
    assert spec["w_stiff"][0] == "FLOAT" and spec["scaling"][0] == ["z2", "abs", "alpha"]
    assert comfyui.ERKGuidSampler.RETURN_TYPES == ("SAMPLER",)
    assert comfyui.NODE_CLASS_MAPPINGS["ERKGuidSampler"] is comfyui.ERKGuidSampler


def test_node_returns_sampler_that_runs_like_the_function(comfy_stub) -> None:
    (sampler,) = comfyui.ERKGuidSampler().get_sampler("heun", 1.5, 0.2, "abs")
    assert isinstance(sampler, StubKSAMPLER)
    assert sampler.extra_options == {"w_stiff": 1.5, "w_con": 0.2, "scaling": "abs"}
    sigmas = edm_sigmas(6).float()
    noise = erkguid.randn_from_seeds(range(3), MODEL.shape, sigma=80.0)
    steps: list[tuple[int, int]] = []
    seen: list[dict] = []

    def model_wrap(x, sigma, **extra):  # ComfyUI's KSamplerX0Inpaint takes model_options, seed, ...
        seen.append(extra)
        return MODEL.denoise(x, sigma)

    def cb(i, den, x, tot):
        steps.append((i, tot))

    out = sampler.sample(model_wrap, sigmas, {"seed": 7, "model_options": {}}, cb, noise, True)
    want = kd.sample_erk_heun(MODEL.denoise, noise, sigmas, w_stiff=1.5, w_con=0.2, scaling="abs", disable=True)
    assert torch.equal(out, want)
    assert steps == [(i, 6) for i in range(6)]
    assert len(seen) == 11 and all(e == {"seed": 7, "model_options": {}} for e in seen)


def test_node_rejects_bad_scaling(comfy_stub) -> None:
    with pytest.raises(ValueError, match="scaling must be one of"):
        comfyui.ERKGuidSampler().get_sampler("heun", 1.0, 0.5, "cubic")
