"""A class-conditional exact denoiser with a null label: the CFG test bed as a single 'network'."""

from __future__ import annotations

import torch
from torch import Tensor

from .gmm import GaussianMixture


class ConditionalMixture:
    """``D(x, sigma, class_labels)`` of a labelled mixture; a label < 0 (``NULL``) means unconditional.

    Per sample: rows with a label get the exact class-conditional denoiser, rows with ``NULL`` the
    exact unconditional one, so one batched call can hold both CFG branches (like a network
    trained with label dropout). ``class_labels=None`` is unconditional for every row.
    """

    NULL = -1

    def __init__(self, gmm: GaussianMixture) -> None:
        if gmm.labels is None:
            raise ValueError("ConditionalMixture needs a mixture with component labels (e.g. tree_2d(), digits_64d())")
        self.gmm = gmm

    def __call__(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        if class_labels is None:
            return self.gmm.denoise(x, sigma)
        cl = torch.as_tensor(class_labels, device=x.device).reshape(-1).long()
        if cl.numel() != x.shape[0]:
            raise ValueError(f"class_labels must have one label per sample ({x.shape[0]}), got {cl.numel()}")
        s = torch.as_tensor(sigma, device=x.device)
        s = s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(-1)
        out = torch.empty_like(x)
        unc = cl < 0
        if unc.any():
            out[unc] = self.gmm.denoise(x[unc], s[unc])
        if (~unc).any():
            out[~unc] = self.gmm.denoise(x[~unc], s[~unc], class_labels=cl[~unc])
        return out
