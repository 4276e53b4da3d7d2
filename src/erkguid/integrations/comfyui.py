"""Optional ComfyUI nodes: ERK-Guid samplers as ``SAMPLER`` outputs for ``SamplerCustom(Advanced)``.

Drop this into ComfyUI as a custom node pack (``custom_nodes/erkguid_nodes/__init__.py`` containing
``from erkguid.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS``).
The module imports without ComfyUI; ``comfy.samplers`` is imported only when a node runs.
Each node wraps a k-diffusion-style function of :mod:`erkguid.integrations.k_diffusion` in
``comfy.samplers.KSAMPLER(fn, {"w_stiff": ..., "w_con": ..., "scaling": ...})``; ComfyUI then
calls ``fn(model, noise, sigmas, extra_args=..., callback=..., disable=...)`` with x0-predicting
``model`` and its ``extra_args`` (whose ``seed`` seeds stochastic solvers per sample).
"""

from __future__ import annotations

from typing import Any

from ..correction import SCALINGS
from . import k_diffusion as kd

CATEGORY = "sampling/custom_sampling/samplers"


def make_ksampler(name: str, w_stiff: float, w_con: float, scaling: str = "z2") -> Any:
    """A ``comfy.samplers.KSAMPLER`` running ``sample_erk_<name>`` (needs ComfyUI importable)."""
    import comfy.samplers  # noqa: PLC0415 - optional dependency, only inside ComfyUI

    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    fn = kd.make_sampler(name)
    return comfy.samplers.KSAMPLER(fn, {"w_stiff": float(w_stiff), "w_con": float(w_con), "scaling": scaling})


class ERKGuidSampler:
    """ComfyUI node: pick an ERK-Guid sampler and its strengths; outputs a ``SAMPLER``."""

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY
    DESCRIPTION = "Stiffness-aware ERK-Guid sampler (Kong et al., ICLR 2026); w_stiff=0 is the plain solver."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        return {
            "required": {
                "sampler": (kd.available(), {"default": "heun"}),
                "w_stiff": ("FLOAT", {"default": kd.DEFAULT_W_STIFF, "min": 0.0, "max": 20.0, "step": 0.05}),
                "w_con": ("FLOAT", {"default": kd.DEFAULT_W_CON, "min": 0.0, "max": 100.0, "step": 0.01}),
                "scaling": (list(SCALINGS), {"default": "z2"}),
            }
        }

    def get_sampler(self, sampler: str, w_stiff: float, w_con: float, scaling: str = "z2") -> tuple[Any]:
        return (make_ksampler(sampler, w_stiff, w_con, scaling),)


NODE_CLASS_MAPPINGS = {"ERKGuidSampler": ERKGuidSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"ERKGuidSampler": "ERK-Guid Sampler"}
