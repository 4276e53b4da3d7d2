"""k-diffusion's ``sampling.py`` as a test reference (the loader lives in :mod:`erkguid.experiments._kdiff`)."""

from erkguid.experiments._kdiff import load_kdiff_sampling

__all__ = ["load_kdiff_sampling"]
