"""ERK-Guid custom-node pack for ComfyUI: stiffness-aware samplers (Kong et al., ICLR 2026) as ``SAMPLER`` nodes.

Install: put this folder into ``ComfyUI/custom_nodes/`` and install its requirements into ComfyUI's Python
(``python -m pip install -r ComfyUI/custom_nodes/erkguid_nodes/requirements.txt``), then restart ComfyUI.
The node "ERK-Guid Sampler" (category sampling/custom_sampling/samplers) plugs into SamplerCustom /
SamplerCustomAdvanced with any SIGMAS node; "ERK-Guid SamplerCustom" / "ERK-Guid SamplerCustomAdvanced" (the stock
nodes' inputs) carry the ERK state across a split sigma list in the LATENT. All logic lives in the ``erkguid`` package
(``erkguid.integrations.comfyui``); this file only exposes it to ComfyUI's loader: through the V3 node API
(``comfy_entrypoint``) where ComfyUI provides ``comfy_api.latest``, else through the V1 ``NODE_CLASS_MAPPINGS``
(ComfyUI's loader reads the V1 mappings first and then ignores ``comfy_entrypoint``, so only one is exported).
"""

try:
    from erkguid.integrations import comfyui as _erkguid_comfyui
except ImportError as exc:  # the message is the point
    raise ImportError(
        "erkguid_nodes needs the 'erkguid' package in ComfyUI's Python environment: run "
        "`python -m pip install -r custom_nodes/erkguid_nodes/requirements.txt` with ComfyUI's python"
    ) from exc

try:
    import comfy_api.latest  # noqa: F401 - present in ComfyUI versions with the V3 node API
except ImportError:  # an older ComfyUI: the V1 node API
    NODE_CLASS_MAPPINGS = _erkguid_comfyui.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _erkguid_comfyui.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
else:
    comfy_entrypoint = _erkguid_comfyui.comfy_entrypoint
    __all__ = ["comfy_entrypoint"]
