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
"""

from __future__ import annotations

from typing import Any

from ..correction import SCALINGS
from . import k_diffusion as kd
from ._defaults import default_strengths

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
    DESCRIPTION = (
        "Stiffness-aware ERK-Guid sampler (Kong et al., ICLR 2026). w_stiff=0 is the plain solver: heun, dpm_2 and "
        "dpmpp_2m then equal ComfyUI's samplers of that name. Decreasing SIGMAS only (no FlipSigmas)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 - ComfyUI's name
        d = default_strengths("heun")
        return {
            "required": {
                "sampler": (kd.available(), {"default": "heun"}),
                "w_stiff": ("FLOAT", {"default": d.w_stiff, "min": 0.0, "max": 20.0, "step": 0.05}),
                "w_con": ("FLOAT", {"default": d.w_con, "min": 0.0, "max": 100.0, "step": 0.01}),
                "scaling": (list(SCALINGS), {"default": d.scaling}),
            }
        }

    def get_sampler(self, sampler: str, w_stiff: float, w_con: float, scaling: str = "z2") -> tuple[Any]:
        return (make_ksampler(sampler, w_stiff, w_con, scaling),)


NODE_CLASS_MAPPINGS = {"ERKGuidSampler": ERKGuidSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"ERKGuidSampler": "ERK-Guid Sampler"}
