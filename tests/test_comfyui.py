"""The ComfyUI node module with ``comfy.samplers`` stubbed by the KSAMPLER calling contract."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
import warnings
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
    assert module.NODE_CLASS_MAPPINGS == {"ERKGuidSampler": comfyui.ERKGuidSampler,
                                          "ERKGuidSamplerCustom": comfyui.ERKGuidSamplerCustom,
                                          "ERKGuidSamplerCustomAdvanced": comfyui.ERKGuidSamplerCustomAdvanced}
    assert module.NODE_DISPLAY_NAME_MAPPINGS == {"ERKGuidSampler": "ERK-Guid Sampler",
                                                 "ERKGuidSamplerCustom": "ERK-Guid SamplerCustom",
                                                 "ERKGuidSamplerCustomAdvanced": "ERK-Guid SamplerCustomAdvanced"}
    node = module.NODE_CLASS_MAPPINGS["ERKGuidSampler"]
    assert callable(getattr(node(), node.FUNCTION)) and node.RETURN_TYPES == ("SAMPLER",) and node.CATEGORY
    for key, stock in (("ERKGuidSamplerCustom", "model add_noise noise_seed cfg positive negative sampler sigmas latent_image"),
                       ("ERKGuidSamplerCustomAdvanced", "noise guider sampler sigmas latent_image")):
        node = module.NODE_CLASS_MAPPINGS[key]  # the stock node's inputs, in its order, and its two LATENT outputs
        assert list(node.INPUT_TYPES()["required"]) == stock.split() and callable(getattr(node(), node.FUNCTION))
        assert node.RETURN_TYPES == ("LATENT", "LATENT") and node.RETURN_NAMES == ("output", "denoised_output")
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

    def int_input(id, default=None, min=None, max=None, step=None, control_after_generate=None, tooltip=None):  # noqa: A002
        return ("INT", id, default, min, max)

    def boolean_input(id, default=None, tooltip=None):  # noqa: A002
        return ("BOOLEAN", id, default)

    def socket(kind):  # a typed socket: Input(id) and Output(display_name=...)
        return types.SimpleNamespace(Input=lambda id, tooltip=None: (kind, id),  # noqa: A002
                                     Output=lambda display_name=None, tooltip=None: (kind, display_name))

    io = types.SimpleNamespace(ComfyNode=ComfyNode, Schema=Schema, NodeOutput=NodeOutput,
                               Combo=types.SimpleNamespace(Input=combo_input), Float=types.SimpleNamespace(Input=float_input),
                               Int=types.SimpleNamespace(Input=int_input), Boolean=types.SimpleNamespace(Input=boolean_input),
                               **{k: socket(k.upper()) for k in ("Model", "Conditioning", "Sigmas", "Latent", "Noise", "Guider")},
                               Sampler=types.SimpleNamespace(Input=lambda id, tooltip=None: ("SAMPLER", id),  # noqa: A002
                                                             Output=lambda display_name=None: ("SAMPLER",)))
    latest = types.ModuleType("comfy_api.latest")
    latest.ComfyExtension, latest.io = ComfyExtension, io
    api = types.ModuleType("comfy_api")
    api.latest = latest
    monkeypatch.setitem(sys.modules, "comfy_api", api)
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    return latest


def test_pack_uses_the_v3_api_where_comfyui_has_it(monkeypatch, comfy_nodes) -> None:
    """With comfy_api.latest present the pack exports only comfy_entrypoint; run ComfyUI's V3 loading steps on it."""
    import asyncio

    latest = _comfy_api_stub(monkeypatch)
    module = _load_pack(monkeypatch)
    assert not hasattr(module, "NODE_CLASS_MAPPINGS")  # else the loader would take V1 and ignore the entry point
    ext = asyncio.run(module.comfy_entrypoint())
    assert isinstance(ext, latest.ComfyExtension)
    asyncio.run(ext.on_load())
    node, custom, advanced = asyncio.run(ext.get_node_list())
    for v3, v1 in ((custom, comfyui.ERKGuidSamplerCustom), (advanced, comfyui.ERKGuidSamplerCustomAdvanced)):
        sch = v3.GET_SCHEMA()
        assert sch.node_id == v1.__name__ and sch.category == v1.CATEGORY
        assert [i[1] for i in sch.inputs] == list(v1.INPUT_TYPES()["required"])
        assert [i[0] for i in sch.inputs] == [v[0] for v in v1.INPUT_TYPES()["required"].values()]
        assert sch.outputs == [("LATENT", "output"), ("LATENT", "denoised_output")]
    (sampler,) = node.execute(sampler="heun", setting="custom", w_stiff=1.0, w_con=0.5, scaling="z2").values
    sigmas = edm_sigmas(5).float()
    high = custom.execute(model=MODEL.denoise, add_noise=True, noise_seed=1, cfg=1.0, positive=None, negative=None,
                          sampler=sampler, sigmas=sigmas[:3], latent_image=_empty_latent(2)).values[0]
    low, _ = advanced.execute(noise=EmptyNoise(), guider=StubGuider(MODEL.denoise), sampler=sampler, sigmas=sigmas[2:],
                              latent_image=high).values
    one, _ = _custom(sampler, sigmas, _empty_latent(2), seed=1)
    assert torch.equal(low["samples"], one["samples"])  # V3 nodes carry the state too, across the two node kinds
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


# ----------------------------------------------------------------------------- the ERK state across two nodes
SCALE = 0.18215  # an SD-style latent format: process_latent_in multiplies, process_latent_out divides


class StubGuider:
    """A model of comfy.samplers.CFGGuider.sample as the sampling nodes use it (written from its source): an empty
    SIGMAS returns the latent; a non-zero latent goes through ``process_latent_in``; the sampler's ``sample`` gets
    ``extra_args`` ``{"model_options", "seed"}``; the result comes back through ``process_latent_out`` in float32."""

    def __init__(self, denoiser) -> None:
        self.model_patcher = types.SimpleNamespace()
        self.denoiser = denoiser

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        if sigmas.shape[-1] == 0:
            return latent_image
        if torch.count_nonzero(latent_image) > 0:
            latent_image = latent_image * SCALE
        model = lambda x, s, **kw: self.denoiser(x, s)  # noqa: E731
        samples = sampler.sample(model, sigmas, {"model_options": {}, "seed": seed}, callback, noise, latent_image,
                                 denoise_mask, disable_pbar)
        return samples.to(torch.float32) / SCALE


class EmptyNoise:
    seed = 0

    def generate_noise(self, latent):
        return torch.zeros_like(latent["samples"])


class RandomNoise:
    def __init__(self, seed) -> None:
        self.seed = seed

    def generate_noise(self, latent):
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(latent["samples"].shape, generator=g)


def _stock_body(guider, noise, sampler, sigmas, latent_image):
    """SamplerCustom(Advanced).execute: a shallow copy of the LATENT dict with 'samples' replaced; the x0 preview
    (last denoised, process_latent_out) in a second copy."""
    latent = latent_image.copy()
    x0 = {}

    def callback(i, denoised, x, total):
        x0["x0"] = denoised

    samples = guider.sample(noise.generate_noise(latent), latent["samples"], sampler, sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback, disable_pbar=True, seed=noise.seed)
    out = latent.copy()
    out["samples"] = samples
    if "x0" in x0:
        den = latent.copy()
        den["samples"] = x0["x0"] / SCALE
    else:
        den = out
    return out, den


class StubSamplerCustom:  # V3 form: classmethods, ``sample = execute``, a NodeOutput-like tuple
    @classmethod
    def execute(cls, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        noise = RandomNoise(noise_seed) if add_noise else EmptyNoise()
        return _stock_body(StubGuider(model), noise, sampler, sigmas, latent_image)

    sample = execute


class StubSamplerCustomAdvanced:  # V1 form: an instance method
    def sample(self, noise, guider, sampler, sigmas, latent_image):
        return _stock_body(guider, noise, sampler, sigmas, latent_image)


@pytest.fixture
def comfy_nodes(monkeypatch, comfy_stub):
    extras = types.ModuleType("comfy_extras")
    ncs = types.ModuleType("comfy_extras.nodes_custom_sampler")
    ncs.SamplerCustom, ncs.SamplerCustomAdvanced = StubSamplerCustom, StubSamplerCustomAdvanced
    extras.nodes_custom_sampler = ncs
    monkeypatch.setitem(sys.modules, "comfy_extras", extras)
    monkeypatch.setitem(sys.modules, "comfy_extras.nodes_custom_sampler", ncs)
    return ncs


def _empty_latent(n=3):
    return {"samples": torch.zeros((n, *MODEL.shape))}


def _custom(sampler, sigmas, latent, add_noise=True, seed=5):
    return comfyui.ERKGuidSamplerCustom().sample(MODEL.denoise, add_noise, seed, 1.0, None, None, sampler, sigmas, latent)


@pytest.mark.parametrize(("name", "w_stiff"), [("heun", 1.0), ("dpmpp_2m", 0.3), ("dpm_2", 1.0), ("heun", 0.0),
                                               ("dpmpp_2m", 0.0)])
def test_split_across_two_erk_nodes_equals_one_run(comfy_nodes, name, w_stiff) -> None:
    """SplitSigmas + two ERK-Guid SamplerCustom nodes (add_noise off on the second) equals one node on the whole
    list exactly; the stock SamplerCustom split (the state dropped, the latent's round trip) does not."""
    (sampler,) = comfyui.ERKGuidSampler().get_sampler(name, "custom", w_stiff, 0.5, "z2")
    sigmas = edm_sigmas(8).float()
    one, _ = _custom(sampler, sigmas, _empty_latent())
    assert comfyui.STATE_KEY not in one  # a run that ended at 0 leaves nothing to continue
    for k in (2, 5):
        high, high_den = _custom(sampler, sigmas[: k + 1], _empty_latent())
        entry = high[comfyui.STATE_KEY]
        assert isinstance(entry, comfyui.LatentState) and entry.samples is high["samples"]
        assert entry.state.sigma == float(sigmas[k]) and comfyui.STATE_KEY not in high_den  # x0 preview: not a state
        with warnings_as_errors():
            low, low_den = _custom(sampler, sigmas[k:], high, add_noise=False)
        assert float((low["samples"] - one["samples"]).abs().max()) == 0.0
        assert comfyui.STATE_KEY not in low and comfyui.STATE_KEY not in low_den
        stock_high, _ = StubSamplerCustom.sample(MODEL.denoise, True, 5, 1.0, None, None, sampler, sigmas[: k + 1],
                                                 _empty_latent())
        stock_low, _ = StubSamplerCustom.sample(MODEL.denoise, False, 5, 1.0, None, None, sampler, sigmas[k:], stock_high)
        assert float((stock_low["samples"] - one["samples"]).abs().max()) > 0  # what stock nodes give: state dropped
    if w_stiff == 0.0:  # strength 0 through the node is the plain solver, as the function gives it
        x = RandomNoise(5).generate_noise(_empty_latent()) * sigmas[0]
        plain = kd.make_sampler(name)(MODEL.denoise, x, sigmas, disable=True, w_stiff=0.0)
        torch.testing.assert_close(one["samples"], plain / SCALE, rtol=0, atol=0)


@contextlib.contextmanager
def warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", erkguid.ErkGuidWarning)
        yield


def test_a_state_is_continued_again_from_a_cached_latent(comfy_nodes) -> None:
    """ComfyUI reuses cached outputs: two second halves from one first-half LATENT (a branch, or a re-run) both equal
    one run; continuing does not consume the state (noise counter, the carry's ERK partner)."""
    for name, w in (("heun", 1.0), ("dpmpp_2m", 0.3), ("heun_pc", 0.5)):
        (sampler,) = comfyui.ERKGuidSampler().get_sampler(name, "custom", w, 0.5, "z2")
        sigmas = edm_sigmas(7).float()
        one, _ = _custom(sampler, sigmas, _empty_latent())
        high, _ = _custom(sampler, sigmas[:4], _empty_latent())
        a, _ = _custom(sampler, sigmas[3:], high, add_noise=False)
        b, _ = _custom(sampler, sigmas[3:], high, add_noise=False)
        assert torch.equal(a["samples"], one["samples"]) and torch.equal(b["samples"], one["samples"]), name


def test_advanced_node_carries_the_state_with_disable_noise(comfy_nodes) -> None:
    (sampler,) = comfyui.ERKGuidSampler().get_sampler("heun", "custom", 1.0, 0.5, "abs")
    sigmas = edm_sigmas(6).float()
    node, guider = comfyui.ERKGuidSamplerCustomAdvanced(), StubGuider(MODEL.denoise)
    one, _ = node.sample(RandomNoise(3), guider, sampler, sigmas, _empty_latent(2))
    high, _ = node.sample(RandomNoise(3), guider, sampler, sigmas[:3], _empty_latent(2))
    low, _ = node.sample(EmptyNoise(), guider, sampler, sigmas[2:], high)
    assert float((low["samples"] - one["samples"]).abs().max()) == 0.0
    with pytest.warns(erkguid.ErkGuidWarning, match="adds noise"):
        fresh, _ = node.sample(RandomNoise(4), guider, sampler, sigmas[2:], high)
    want, _ = StubSamplerCustomAdvanced().sample(RandomNoise(4), guider, sampler, sigmas[2:], high)
    assert torch.equal(fresh["samples"], want["samples"])  # a fresh run: what the stock node gives


def test_a_state_that_cannot_continue_is_reported_and_the_run_starts_fresh(comfy_nodes) -> None:
    (heun,) = comfyui.ERKGuidSampler().get_sampler("heun", "custom", 1.0, 0.5, "z2")
    (dpm2,) = comfyui.ERKGuidSampler().get_sampler("dpm_2", "custom", 1.0, 0.5, "z2")
    sigmas = edm_sigmas(6).float()
    high, _ = _custom(heun, sigmas[:4], _empty_latent())
    changed = {**high, "samples": high["samples"] * 1.0}  # e.g. a latent operation between the two nodes
    cases = [
        (heun, sigmas[3:], changed, False, "latent was changed"),
        (heun, sigmas[3:], high, True, "adds noise"),
        (heun, sigmas[2:], high, False, "SIGMAS start at"),
        (dpm2, sigmas[3:], high, False, "made by solver 'heun'"),
        (StubKSAMPLER(lambda model, x, sigmas, **kw: x), sigmas[3:], high, False, "not an ERK-Guid sampler"),
    ]
    for sampler, sig, latent, add, why in cases:
        with pytest.warns(erkguid.ErkGuidWarning, match=why):
            got, _ = _custom(sampler, sig, latent, add_noise=add)
        want, _ = StubSamplerCustom.sample(MODEL.denoise, add, 5, 1.0, None, None, sampler, sig, latent)
        assert torch.equal(got["samples"], want["samples"]), why  # the stock node's result: a fresh run
    # a fresh latent (no state) is the ordinary case: no warning; nor a full run's output sampled again (hires fix)
    with warnings_as_errors():
        full, _ = _custom(heun, sigmas, _empty_latent())
        _custom(heun, sigmas[2:], {**full, "samples": full["samples"] * 2.0})
    # a stale entry a stock node copied along is removed by the next ERK-Guid node's outputs (after its warning)
    stock, _ = StubSamplerCustom.sample(MODEL.denoise, False, 5, 1.0, None, None, heun, sigmas[3:], high)
    assert stock[comfyui.STATE_KEY].samples is not stock["samples"]
    with pytest.warns(erkguid.ErkGuidWarning, match="latent was changed"):
        again, again_den = _custom(heun, sigmas[3:5], stock, add_noise=False)
    assert again[comfyui.STATE_KEY].samples is again["samples"] and comfyui.STATE_KEY not in again_den
