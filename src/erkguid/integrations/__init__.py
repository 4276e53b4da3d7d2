"""Adapters to other ecosystems: k-diffusion / ComfyUI sampler functions and diffusers schedulers.

Each submodule imports its third-party package lazily (or not at all), so ``import erkguid``
never needs diffusers, k-diffusion or ComfyUI.
"""
