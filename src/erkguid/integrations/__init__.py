"""Adapters to other ecosystems: k-diffusion / ComfyUI sampler functions and diffusers schedulers.

Each submodule imports its third-party package lazily (or not at all), so ``import erkguid``
never needs diffusers, k-diffusion or ComfyUI.

When diffusers is installed, ``erkguid.integrations.diffusers`` is pre-registered in
``sys.modules`` as a stand-in that imports the real module on the first attribute read:
diffusers' pipeline loader resolves a component saved as ``["erkguid.integrations.diffusers",
"ERK..."]`` only from ``sys.modules`` (it never imports a module a repository names), so
``import erkguid`` is enough for ``DiffusionPipeline.from_pretrained`` to load ERK schedulers,
while ``import erkguid`` itself still does not import diffusers.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """Stands in ``sys.modules`` for a submodule until an attribute is read, then imports it and forwards."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


def _register_deferred_diffusers() -> None:
    name = f"{__name__}.diffusers"
    if name not in sys.modules and importlib.util.find_spec("diffusers") is not None:
        sys.modules[name] = _Deferred(name, "deferred erkguid.integrations.diffusers (imported on first use)")


_register_deferred_diffusers()
