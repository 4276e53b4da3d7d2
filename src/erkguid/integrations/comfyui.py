"""ComfyUI nodes: ERK-Guid samplers as ``SAMPLER`` outputs for ``SamplerCustom`` / ``SamplerCustomAdvanced``.

The installable custom-node pack is ``comfyui/erkguid_nodes/`` in the repository (see docs/ecosystem.md);
its ``__init__.py`` re-exports :data:`NODE_CLASS_MAPPINGS` and :data:`NODE_DISPLAY_NAME_MAPPINGS` from here.
The module imports without ComfyUI; ``comfy.samplers`` is imported only when a node runs.

Contract (ComfyUI's V1 node API and ``comfy.samplers.KSAMPLER``): the node returns
``comfy.samplers.KSAMPLER(fn, {"w_stiff": ..., "w_con": ..., "scaling": ...})``; ComfyUI's
``KSAMPLER.sample`` scales the noise to ``sigmas[0]``, puts ``denoise_mask`` into ``extra_args`` and calls
``fn(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback, disable=disable_pbar, **extra_options)``
with an x0-predicting ``model_k(x, sigma, **extra_args)`` (``extra_args``: ``model_options``, ``seed``,
``denoise_mask``); ``k_callback`` reads the keys ``i``, ``denoised`` and ``x``; the result is passed through
``inverse_noise_scaling(sigmas[-1], ...)``. The stock ``KSampler`` node's sampler list is not extended
(that needs patching ComfyUI's module globals); use ``SamplerCustom`` with any ``SIGMAS`` node.

Split sigma lists: the ERK state travels in the LATENT. ComfyUI's sampling nodes hand a ``SAMPLER`` only
the noise-scaled latent and return only a tensor, while ``SamplerCustom``/``SamplerCustomAdvanced`` (and
``KSamplerAdvanced``) build their output LATENT as a shallow copy of the input dict, so extra keys travel
along. :class:`ERKGuidSamplerCustom` and :class:`ERKGuidSamplerCustomAdvanced` take the stock nodes' inputs,
run the stock node itself with the ERK sampler given the incoming state, and write the final
:class:`~erkguid.engine.State` of a run that ended above 0 into the output LATENT under :data:`STATE_KEY` (a
:class:`LatentState`; a run that ended at 0 writes none, and a stale entry copied from the input is removed). The
next of these nodes continues it (bit-identical to one run) when (1) the latent is the very tensor the state
was written with (no node changed it), (2) the node adds no noise, (3) the SIGMAS start at the state's sigma
and (4) the sampler runs the same solver; otherwise it warns (:class:`~erkguid.ErkGuidWarning`) naming the
failed condition and starts a fresh run. Stock ``SamplerCustom(Advanced)`` nodes neither read nor write the
state (docs/ecosystem.md lists the graphs).

Two node APIs, one node each: :class:`ERKGuidSampler` is the V1 form (``INPUT_TYPES`` / ``RETURN_TYPES`` /
``FUNCTION``) and :func:`comfy_entrypoint` the V3 form (``comfy_api.latest``: an ``io.ComfyNode`` with
``define_schema``/``execute`` listed by a ``ComfyExtension``), built from the same :func:`_inputs`.
ComfyUI's loader takes ``NODE_CLASS_MAPPINGS`` when a pack exports it and ``comfy_entrypoint``
otherwise, so the pack exports exactly one of them (V3 where ``comfy_api.latest`` exists).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from .._validate import ErkGuidWarning
from ..correction import SCALINGS
from ..engine import State
from . import k_diffusion as kd
from ._defaults import default_strengths

CATEGORY = "sampling/custom_sampling/samplers"
NODE_ID = "ERKGuidSampler"
DISPLAY_NAME = "ERK-Guid Sampler"


SETTINGS = ("recommended", "custom")


def _inputs() -> list[tuple[str, str, dict[str, Any]]]:
    """The node's inputs, ``(name, "COMBO" | "FLOAT", options)``: the one definition both node APIs read.

    ``setting="recommended"`` (default) runs :func:`erkguid.recommended` for the sampler's solver at the NFE of the
    SIGMAS it is given (off for the multistep solvers); ``"custom"`` uses the four widgets (``trust`` 0 = none).
    """
    d = default_strengths("heun")
    return [
        ("sampler", "COMBO", {"options": kd.available(), "default": "heun"}),
        ("setting", "COMBO", {"options": list(SETTINGS), "default": "recommended"}),
        ("w_stiff", "FLOAT", {"default": d["w_stiff"], "min": 0.0, "max": 20.0, "step": 0.05}),
        ("w_con", "FLOAT", {"default": d["w_con"], "min": 0.0, "max": 100.0, "step": 0.01}),
        ("scaling", "COMBO", {"options": list(SCALINGS), "default": d["scaling"]}),
        ("trust", "FLOAT", {"default": d["trust"] or 0.0, "min": 0.0, "max": 100.0, "step": 0.05}),
    ]


def make_ksampler(name: str, w_stiff: float | None = None, w_con: float | None = None, scaling: str | None = None,
                  trust: float | None = None) -> Any:
    """A ``comfy.samplers.KSAMPLER`` running ``sample_erk_<name>`` (needs ComfyUI importable); strengths left ``None``
    are :func:`erkguid.recommended` at the run's NFE."""
    import comfy.samplers  # noqa: PLC0415 - optional dependency, only inside ComfyUI

    if scaling is not None and scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    fn = kd.make_sampler(name)
    if w_stiff is None:
        return comfy.samplers.KSAMPLER(fn, {})
    return comfy.samplers.KSAMPLER(fn, {"w_stiff": float(w_stiff), "w_con": float(w_con or 0.0), "scaling": scaling or "z2",
                                        "trust": trust or None})


def _node_sampler(sampler: str, setting: str, w_stiff: float, w_con: float, scaling: str, trust: float) -> Any:
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if setting == "recommended":
        return make_ksampler(sampler)
    return make_ksampler(sampler, w_stiff, w_con, scaling, trust)


class ERKGuidSampler:
    """ComfyUI node: pick an ERK-Guid sampler and its strengths; outputs a ``SAMPLER``."""

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Stiffness-aware ERK-Guid sampler (Kong et al., ICLR 2026). setting=recommended: erkguid's evidence-backed "
        "strengths for the sampler at the SIGMAS' NFE (off for multistep samplers); custom: the widgets. w_stiff=0 is the "
        "plain solver: heun, dpm_2 and dpmpp_2m then equal ComfyUI's samplers of that name. Decreasing SIGMAS only."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {"required": {name: (kind if kind != "COMBO" else opts.pop("options"), opts) for name, kind, opts in _inputs()}}

    def get_sampler(self, sampler: str, setting: str = "recommended", w_stiff: float = 0.0, w_con: float = 0.0,
                    scaling: str = "z2", trust: float = 0.0) -> tuple[Any]:
        return (_node_sampler(sampler, setting, w_stiff, w_con, scaling, trust),)


# --------------------------------------------------------------------- the state in the LATENT
STATE_KEY = "erkguid_state"


@dataclass(frozen=True)
class LatentState:
    """What an ERK-Guid sampling node writes into its output LATENT under :data:`STATE_KEY`.

    Attributes:
        state: the run's final :class:`~erkguid.engine.State` (in the sampler's variables: after
            ``process_latent_in`` and noise scaling, so a continuation skips the latent's round trip).
        samples: the output tensor it was written with; a later node continues only that very tensor.
    """

    state: State
    samples: Any


def _solver(sampler: Any) -> str | None:
    """The erkguid solver of an ERK-Guid ``KSAMPLER`` (``None`` for any other sampler)."""
    return getattr(getattr(sampler, "sampler_function", None), "erkguid_solver", None)


def continuation(latent: dict[str, Any], sampler: Any, sigmas: Any, adds_noise: bool) -> State | None:
    """The state to continue from ``latent``, or ``None``; a state that cannot be continued is reported (warning)."""
    entry = latent.get(STATE_KEY)
    if not isinstance(entry, LatentState) or len(sigmas) == 0:
        return None
    solver = _solver(sampler)
    if solver is None:
        why = "the SAMPLER is not an ERK-Guid sampler"
    elif entry.samples is not latent.get("samples"):
        why = "the latent was changed (or replaced) after the ERK-Guid node wrote it"
    elif adds_noise:
        why = "this node adds noise (set add_noise off / use DisableNoise to continue)"
    elif float(sigmas[0]) != entry.state.sigma:
        why = f"the SIGMAS start at {float(sigmas[0]):.6g}, the state is at sigma {entry.state.sigma:.6g}"
    elif solver != entry.state.solver:
        why = f"the state was made by solver {entry.state.solver!r}, this sampler runs {solver!r}"
    else:
        return entry.state
    warnings.warn(f"ERK-Guid state in the LATENT dropped: {why}; this node starts a fresh run (ERK pair and solver "
                  "history restart at the split)", ErkGuidWarning, stacklevel=3)
    return None


def _stock(name: str) -> Any:
    """ComfyUI's own node method ``SamplerCustom.sample`` / ``SamplerCustomAdvanced.sample`` (V3: a classmethod)."""
    from comfy_extras import nodes_custom_sampler as ncs  # noqa: PLC0415 - only inside ComfyUI

    cls = getattr(ncs, name)
    return cls.sample if isinstance(inspect.getattr_static(cls, "sample"), classmethod) else cls().sample


def _sample_through(stock: str, sampler: Any, sigmas: Any, latent: dict[str, Any], adds_noise: bool,
                    call: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the stock node ``stock`` via ``call(node_method, sampler)``, the ERK sampler continuing the latent's state;
    returns ``(output, denoised_output)`` with the final state written into ``output``."""
    import comfy.samplers  # noqa: PLC0415 - only inside ComfyUI

    prev = continuation(latent, sampler, sigmas, adds_noise)
    sink: list[State] = []
    if _solver(sampler) is not None:
        sampler = comfy.samplers.KSAMPLER(sampler.sampler_function,
                                          {**sampler.extra_options, "state": prev, "on_state": sink.append},
                                          getattr(sampler, "inpaint_options", {}))
    res = call(_stock(stock), sampler)
    out, den, same = _valid(res[0]), _valid(res[1]), res[1] is res[0]
    if sink and sink[-1].sigma > 0:  # a run that ended at 0 has nothing left to continue
        out = {**out, STATE_KEY: LatentState(sink[-1], out["samples"])}
    return out, out if same else den


def _valid(latent: dict[str, Any]) -> dict[str, Any]:
    """``latent`` without a state entry that belongs to another tensor (the stock node copied the input's entry)."""
    entry = latent.get(STATE_KEY)
    if entry is None or (isinstance(entry, LatentState) and entry.samples is latent.get("samples")):
        return latent
    return {k: v for k, v in latent.items() if k != STATE_KEY}


_SAMPLING = "sampling/custom_sampling"
_CUSTOM_INPUTS: list[tuple[str, str, dict[str, Any]]] = [
    ("model", "MODEL", {}),
    ("add_noise", "BOOLEAN", {"default": True}),
    ("noise_seed", "INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
    ("cfg", "FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
    ("positive", "CONDITIONING", {}),
    ("negative", "CONDITIONING", {}),
    ("sampler", "SAMPLER", {}),
    ("sigmas", "SIGMAS", {}),
    ("latent_image", "LATENT", {}),
]
_ADVANCED_INPUTS: list[tuple[str, str, dict[str, Any]]] = [
    ("noise", "NOISE", {}), ("guider", "GUIDER", {}), ("sampler", "SAMPLER", {}), ("sigmas", "SIGMAS", {}),
    ("latent_image", "LATENT", {}),
]


def _v1_inputs(spec: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    return {"required": {name: (kind, dict(opts)) if opts else (kind,) for name, kind, opts in spec}}


class ERKGuidSamplerCustom:
    """``SamplerCustom`` (ComfyUI's own node, same inputs and outputs) that carries the ERK state in the LATENT."""

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = _SAMPLING
    DESCRIPTION = ("SamplerCustom that carries the ERK-Guid state across a split sigma list (SplitSigmas): its output "
                   "LATENT holds the state and the next ERK-Guid SamplerCustom(Advanced), with add_noise off, continues "
                   "it exactly. A state that cannot be continued is reported and the run starts fresh.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return _v1_inputs(_CUSTOM_INPUTS)

    def sample(self, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: Any, negative: Any, sampler: Any,
               sigmas: Any, latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return _sample_through("SamplerCustom", sampler, sigmas, latent_image, bool(add_noise),
                               lambda node, s: node(model, add_noise, noise_seed, cfg, positive, negative, s, sigmas,
                                                    latent_image))


class ERKGuidSamplerCustomAdvanced:
    """``SamplerCustomAdvanced`` (ComfyUI's own node) that carries the ERK state in the LATENT."""

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = _SAMPLING
    DESCRIPTION = ("SamplerCustomAdvanced that carries the ERK-Guid state across a split sigma list: with DisableNoise "
                   "on the second node, the second half continues the first exactly.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return _v1_inputs(_ADVANCED_INPUTS)

    def sample(self, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent_image: dict[str, Any]
               ) -> tuple[dict[str, Any], dict[str, Any]]:
        generated = noise.generate_noise(latent_image)  # what the stock node adds: zeros for DisableNoise
        adds = not hasattr(generated, "count_nonzero") or bool(generated.count_nonzero() > 0)
        return _sample_through("SamplerCustomAdvanced", sampler, sigmas, latent_image, adds,
                               lambda node, s: node(noise, guider, s, sigmas, latent_image))


NODE_CLASS_MAPPINGS: dict[str, type] = {NODE_ID: ERKGuidSampler, "ERKGuidSamplerCustom": ERKGuidSamplerCustom,
                                        "ERKGuidSamplerCustomAdvanced": ERKGuidSamplerCustomAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: DISPLAY_NAME, "ERKGuidSamplerCustom": "ERK-Guid SamplerCustom",
                              "ERKGuidSamplerCustomAdvanced": "ERK-Guid SamplerCustomAdvanced"}


def v3_extension() -> Any:
    """The V3 ``ComfyExtension`` listing the ERK-Guid sampler node (needs ComfyUI's ``comfy_api.latest``)."""
    from comfy_api.latest import ComfyExtension, io  # noqa: PLC0415 - only inside ComfyUI

    kinds = {"COMBO": io.Combo, "FLOAT": io.Float, "INT": io.Int, "BOOLEAN": io.Boolean, "MODEL": io.Model,
             "CONDITIONING": io.Conditioning, "SAMPLER": io.Sampler, "SIGMAS": io.Sigmas, "LATENT": io.Latent,
             "NOISE": io.Noise, "GUIDER": io.Guider}

    def _io_input(name: str, kind: str, opts: dict[str, Any]) -> Any:
        return kinds[kind].Input(name, **opts)

    def _latent_outputs() -> list[Any]:
        return [io.Latent.Output(display_name="output"), io.Latent.Output(display_name="denoised_output")]

    class ERKGuidSamplerV3(io.ComfyNode):
        """V3 form of :class:`ERKGuidSampler` (same node id, inputs and output)."""

        @classmethod
        def define_schema(cls) -> Any:
            return io.Schema(node_id=NODE_ID, display_name=DISPLAY_NAME, category=CATEGORY,
                             inputs=[_io_input(*spec) for spec in _inputs()], outputs=[io.Sampler.Output()])

        @classmethod
        def execute(cls, sampler: str, setting: str = "recommended", w_stiff: float = 0.0, w_con: float = 0.0,
                    scaling: str = "z2", trust: float = 0.0) -> Any:
            return io.NodeOutput(_node_sampler(sampler, setting, w_stiff, w_con, scaling, trust))

    class ERKGuidSamplerCustomV3(io.ComfyNode):
        """V3 form of :class:`ERKGuidSamplerCustom`."""

        @classmethod
        def define_schema(cls) -> Any:
            return io.Schema(node_id="ERKGuidSamplerCustom", display_name=NODE_DISPLAY_NAME_MAPPINGS["ERKGuidSamplerCustom"],
                             category=_SAMPLING, inputs=[_io_input(*spec) for spec in _CUSTOM_INPUTS],
                             outputs=_latent_outputs())

        @classmethod
        def execute(cls, **kw: Any) -> Any:
            return io.NodeOutput(*ERKGuidSamplerCustom().sample(**kw))

    class ERKGuidSamplerCustomAdvancedV3(io.ComfyNode):
        """V3 form of :class:`ERKGuidSamplerCustomAdvanced`."""

        @classmethod
        def define_schema(cls) -> Any:
            return io.Schema(node_id="ERKGuidSamplerCustomAdvanced",
                             display_name=NODE_DISPLAY_NAME_MAPPINGS["ERKGuidSamplerCustomAdvanced"], category=_SAMPLING,
                             inputs=[_io_input(*spec) for spec in _ADVANCED_INPUTS], outputs=_latent_outputs())

        @classmethod
        def execute(cls, **kw: Any) -> Any:
            return io.NodeOutput(*ERKGuidSamplerCustomAdvanced().sample(**kw))

    class ERKGuidExtension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return [ERKGuidSamplerV3, ERKGuidSamplerCustomV3, ERKGuidSamplerCustomAdvancedV3]

    return ERKGuidExtension()


async def comfy_entrypoint() -> Any:
    """ComfyUI's V3 entry point: ``await comfy_entrypoint()`` returns the extension (see :func:`v3_extension`)."""
    return v3_extension()
