"""ERK-Guid custom-node pack for ComfyUI: stiffness-aware samplers (Kong et al., ICLR 2026) as ``SAMPLER`` nodes.

Install: put this folder into ``ComfyUI/custom_nodes/`` and install its requirements into ComfyUI's Python
(``python -m pip install -r ComfyUI/custom_nodes/erkguid_nodes/requirements.txt``), then restart ComfyUI.
The node "ERK-Guid Sampler" (category sampling/custom_sampling/samplers) plugs into SamplerCustom /
SamplerCustomAdvanced with any SIGMAS node. All logic lives in the ``erkguid`` package
(``erkguid.integrations.comfyui``); this file only exposes it to ComfyUI's loader.
"""

try:
    from erkguid.integrations.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "erkguid_nodes needs the 'erkguid' package in ComfyUI's Python environment: run "
        "`python -m pip install -r custom_nodes/erkguid_nodes/requirements.txt` with ComfyUI's python"
    ) from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
