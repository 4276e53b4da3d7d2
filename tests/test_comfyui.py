"""The ComfyUI node module with ``comfy.samplers`` stubbed by the KSAMPLER calling contract."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import tomllib
import torch

import erkguid
from erkguid.integrations import comfyui
from erkguid.integrations import k_diffusion as kd
from erkguid.schedules import edm_sigmas

MODEL = erkguid.digits_64d(image_shape=True)


class StubKSAMPLER:
    """A model of comfy.samplers.KSAMPLER's contract (written from its source, not copied): it stores
    (sampler_function, extra_options); ``sample`` puts ``denoise_mask`` into ``extra_args``, scales the noise to
    ``sigmas[0]`` (EDM/EPS ``noise_scaling``: ``sigma * noise + latent_image``), wraps the callback as
    ``callback(i, denoised, x, total_steps)``, calls ``fn(model, noise, sigmas, extra_args=..., callback=...,
    disable=..., **extra_options)`` and applies ``inverse_noise_scaling(sigmas[-1], x)`` (identity for EPS)."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None) -> None:
        self.sampler_function = sampler_function
        self.extra_options = extra_options or {}

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args["denoise_mask"] = denoise_mask
        noise = sigmas[0] * noise + (0 if latent_image is None else latent_image)
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
    assert spec["w_stiff"][0] == "FLOAT" and spec["scaling"][0] == ["z2", "abs", "alpha", "sat"]
    assert comfyui.ERKGuidSampler.RETURN_TYPES == ("SAMPLER",)
    assert comfyui.NODE_CLASS_MAPPINGS["ERKGuidSampler"] is comfyui.ERKGuidSampler


def test_node_returns_sampler_that_runs_like_the_function(comfy_stub) -> None:
    (sampler,) = comfyui.ERKGuidSampler().get_sampler("heun", "custom", 1.5, 0.2, "abs")
    assert isinstance(sampler, StubKSAMPLER)
    assert sampler.extra_options == {"w_stiff": 1.5, "w_con": 0.2, "scaling": "abs", "trust": None}
    sigmas = edm_sigmas(6).float()
    noise = erkguid.randn_from_seeds(range(3), MODEL.shape, sigma=80.0)
    steps: list[tuple[int, int]] = []
    seen: list[dict] = []

    def model_wrap(x, sigma, **extra):  # ComfyUI's KSamplerX0Inpaint takes model_options, seed, ...
        seen.append(extra)
        return MODEL.denoise(x, sigma)

    def cb(i, den, x, tot):
        steps.append((i, tot))

    out = sampler.sample(model_wrap, sigmas, {"seed": 7, "model_options": {}}, cb, noise / 80.0, disable_pbar=True)
    want = kd.sample_erk_heun(MODEL.denoise, noise, sigmas, w_stiff=1.5, w_con=0.2, scaling="abs", disable=True)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)  # noise / 80 * 80 rounds in float32
    assert steps == [(i, 6) for i in range(6)]
    assert len(seen) == 11 and all(e == {"seed": 7, "model_options": {}, "denoise_mask": None} for e in seen)


def test_node_rejects_bad_scaling(comfy_stub) -> None:
    with pytest.raises(ValueError, match="scaling must be one of"):
        comfyui.ERKGuidSampler().get_sampler("heun", "custom", 1.0, 0.5, "cubic")
    with pytest.raises(ValueError, match="setting must be one of"):
        comfyui.ERKGuidSampler().get_sampler("heun", "paper")


def test_node_sampler_handles_split_and_one_value_sigmas(comfy_stub) -> None:
    """SplitSigmas at step 0 / N hands a one-value list to one of the two SamplerCustom nodes: the input comes back."""
    (sampler,) = comfyui.ERKGuidSampler().get_sampler("dpmpp_2m", "custom", 0.0, 0.5, "z2")
    model = lambda x, s, **kw: MODEL.denoise(x, s)  # noqa: E731
    noise = erkguid.randn_from_seeds(range(2), MODEL.shape)
    sigmas = edm_sigmas(6).float()
    one = sampler.sample(model, sigmas[:1], {"seed": 0}, None, noise, disable_pbar=True)
    assert torch.equal(one, 80.0 * noise)
    states: list[torch.Tensor] = []
    full = sampler.sample(model, sigmas, {"seed": 0}, lambda i, d, x, t: states.append(x), noise, disable_pbar=True)
    high = sampler.sample(model, sigmas[:4], {"seed": 0}, None, noise, disable_pbar=True)
    assert torch.equal(high, states[3])  # the first part lands exactly where one run is after 3 steps
    low = sampler.sample(model, sigmas[3:], {"seed": 0}, None, torch.zeros_like(noise), latent_image=high,
                         disable_pbar=True)  # SamplerCustom with add_noise off: the latent continues
    # today's rule: the second part is a fresh run from `high` (the multistep history restarts at the split)
    assert torch.equal(low, kd.sample_erk_dpmpp_2m(model, high, sigmas[3:], disable=True, w_stiff=0.0))
    assert not torch.equal(low, full)


def test_default_node_setting_is_recommended_and_deis_is_not_comfys(comfy_stub) -> None:
    spec = comfyui.ERKGuidSampler.INPUT_TYPES()["required"]
    assert spec["setting"][1]["default"] == "recommended"  # erkguid.recommended at the SIGMAS' NFE
    (sampler,) = comfyui.ERKGuidSampler().get_sampler("heun")
    assert sampler.extra_options == {}  # nothing fixed: sample_erk takes erkguid.recommended for the run
    sigmas = edm_sigmas(6).float()
    noise = erkguid.randn_from_seeds(range(3), MODEL.shape, sigma=80.0)
    out = sampler.sample(lambda x, s, **kw: MODEL.denoise(x, s), sigmas, {"seed": 0}, None, noise / 80.0, disable_pbar=True)
    want = erkguid.sample(MODEL, noise, sigmas, solver="heun", **erkguid.recommended("heun", 11))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert "deis" not in spec["sampler"][0] and "deis_rhoab" in spec["sampler"][0]


PACK = Path(__file__).resolve().parents[1] / "comfyui" / "erkguid_nodes"


def _load_pack(monkeypatch):
    """ComfyUI's loader: import custom_nodes/<name>/__init__.py under the folder name."""
    spec = importlib.util.spec_from_file_location(PACK.name, PACK / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, PACK.name, module)
    spec.loader.exec_module(module)
    return module


def test_custom_node_pack_loads_like_comfyui_loads_it(monkeypatch) -> None:
    """Without comfy_api (an older ComfyUI) the pack exports the V1 mappings, which the loader reads first."""
    module = _load_pack(monkeypatch)
    assert not hasattr(module, "comfy_entrypoint")
    assert module.NODE_CLASS_MAPPINGS == {"ERKGuidSampler": comfyui.ERKGuidSampler}
    assert module.NODE_DISPLAY_NAME_MAPPINGS == {"ERKGuidSampler": "ERK-Guid Sampler"}
    node = module.NODE_CLASS_MAPPINGS["ERKGuidSampler"]
    assert callable(getattr(node(), node.FUNCTION)) and node.RETURN_TYPES == ("SAMPLER",) and node.CATEGORY
    meta = tomllib.loads((PACK / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "erkguid-nodes" and meta["project"]["version"].count(".") == 2
    assert "Repository" in meta["project"]["urls"]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(meta["tool"]["comfy"])
    reqs = [r.strip() for r in (PACK / "requirements.txt").read_text().splitlines() if r.strip()]
    assert reqs == meta["project"]["dependencies"] == ["erkguid>=0.1.0"]


def _comfy_api_stub(monkeypatch) -> types.ModuleType:
    """A model of ``comfy_api.latest`` as the V3 nodes use it (written from ComfyUI's sources, not copied):
    ``ComfyExtension`` (async ``on_load``, async ``get_node_list``), ``io.ComfyNode`` (``GET_SCHEMA`` returns
    ``define_schema()``), ``io.Schema(node_id, category, inputs, outputs, display_name)``, ``io.Combo.Input(id,
    options, default)``, ``io.Float.Input(id, default, min, max, step, round)``, ``io.Sampler.Output()`` and
    ``io.NodeOutput(*values)``."""
    from dataclasses import dataclass, field

    class ComfyExtension:
        async def on_load(self) -> None:
            return None

        async def get_node_list(self) -> list:
            raise NotImplementedError

    @dataclass
    class Schema:
        node_id: str
        category: str = ""
        inputs: list = field(default_factory=list)
        outputs: list = field(default_factory=list)
        display_name: str | None = None

    class ComfyNode:
        @classmethod
        def GET_SCHEMA(cls):  # noqa: N802 - ComfyUI's name
            return cls.define_schema()

    class NodeOutput:
        def __init__(self, *values) -> None:
            self.values = values

    def combo_input(id, options, default=None, tooltip=None):  # noqa: A002 - ComfyUI's parameter name
        return ("COMBO", id, list(options), default)

    def float_input(id, default=None, min=None, max=None, step=None, round=None, tooltip=None):  # noqa: A002
        return ("FLOAT", id, default, min, max, step)

    io = types.SimpleNamespace(ComfyNode=ComfyNode, Schema=Schema, NodeOutput=NodeOutput,
                               Combo=types.SimpleNamespace(Input=combo_input), Float=types.SimpleNamespace(Input=float_input),
                               Sampler=types.SimpleNamespace(Output=lambda display_name=None: ("SAMPLER",)))
    latest = types.ModuleType("comfy_api.latest")
    latest.ComfyExtension, latest.io = ComfyExtension, io
    api = types.ModuleType("comfy_api")
    api.latest = latest
    monkeypatch.setitem(sys.modules, "comfy_api", api)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    return latest


def test_pack_uses_the_v3_api_where_comfyui_has_it(monkeypatch, comfy_stub) -> None:
    """With comfy_api.latest present the pack exports only comfy_entrypoint; run ComfyUI's V3 loading steps on it."""
    import asyncio

    latest = _comfy_api_stub(monkeypatch)
    module = _load_pack(monkeypatch)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # else the loader would take V1 and ignore the entry point
    ext = asyncio.run(module.comfy_entrypoint())
    assert isinstance(ext, latest.ComfyExtension)
    asyncio.run(ext.on_load())
    (node,) = asyncio.run(ext.get_node_list())
    schema = node.GET_SCHEMA()
    assert (schema.node_id, schema.display_name, schema.category) == ("ERKGuidSampler", "ERK-Guid Sampler", comfyui.CATEGORY)
    assert [i[1] for i in schema.inputs] == list(comfyui.ERKGuidSampler.INPUT_TYPES()["required"])
    assert schema.inputs[0][2] == kd.available() and schema.inputs[1][2] == list(comfyui.SETTINGS)
    assert schema.outputs == [("SAMPLER",)]
    out = node.execute(sampler="dpm_2", setting="custom", w_stiff=0.5, w_con=0.1, scaling="abs")
    (sampler,) = out.values
    assert isinstance(sampler, StubKSAMPLER)
    assert sampler.extra_options == {"w_stiff": 0.5, "w_con": 0.1, "scaling": "abs", "trust": None}
    assert sampler.sampler_function.__name__ == "sample_erk_dpm_2"
