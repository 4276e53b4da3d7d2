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

Two node APIs, one node: :class:`ERKGuidSampler` is the V1 form (``INPUT_TYPES`` / ``RETURN_TYPES`` /
``FUNCTION``) and :func:`comfy_entrypoint` the V3 form (``comfy_api.latest``: an ``io.ComfyNode`` with
``define_schema``/``execute`` listed by a ``ComfyExtension``), built from the same :func:`_inputs`.
ComfyUI's loader takes ``NODE_CLASS_MAPPINGS`` when a pack exports it and ``comfy_entrypoint``
otherwise, so the pack exports exactly one of them (V3 where ``comfy_api.latest`` exists).
"""

from __future__ import annotations

from typing import Any

from ..correction import SCALINGS
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


NODE_CLASS_MAPPINGS = {NODE_ID: ERKGuidSampler}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: DISPLAY_NAME}


def v3_extension() -> Any:
    """The V3 ``ComfyExtension`` listing the ERK-Guid sampler node (needs ComfyUI's ``comfy_api.latest``)."""
    from comfy_api.latest import ComfyExtension, io  # noqa: PLC0415 - only inside ComfyUI

    def _io_input(name: str, kind: str, opts: dict[str, Any]) -> Any:
        return io.Combo.Input(name, **opts) if kind == "COMBO" else io.Float.Input(name, **opts)

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

    class ERKGuidExtension(ComfyExtension):
        async def get_node_list(self) -> list[type]:
            return [ERKGuidSamplerV3]

    return ERKGuidExtension()


async def comfy_entrypoint() -> Any:
    """ComfyUI's V3 entry point: ``await comfy_entrypoint()`` returns the extension (see :func:`v3_extension`)."""
    return v3_extension()
