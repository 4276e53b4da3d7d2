"""EDM / EDM2 preconditioning around a raw network (Karras et al. 2022, Table 1; EDM2 ``Precond``).

D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), **cond) with
c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd = sigma_data).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._common import Net, acc_dtype, check_output, col, sigma_vector


def edm_c_noise(sigma: Tensor) -> Tensor:
    """EDM's noise conditioning ln(sigma) / 4 (also EDM2's)."""
    return sigma.log() / 4


def edm_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM preconditioning ``(c_skip, c_out, c_in, c_noise)`` for per-sample ``sigma`` ``[B]``, in ``sigma``'s dtype.

    The one implementation of Karras et al. (2022) Table 1, used by :class:`EDMDenoiser`, the shipped
    learned models (:class:`erkguid.learned.LearnedDenoiser`) and their trainer (``erkguid.training.edm``).
    """
    s2, d2 = sigma * sigma, sigma_data**2
    return d2 / (s2 + d2), sigma * sigma_data / (s2 + d2).sqrt(), 1 / (s2 + d2).sqrt(), edm_c_noise(sigma)


class EDMDenoiser:
    """Wrap a raw EDM/EDM2 network ``F(x_in, c_noise[B], **cond)`` as ``D(x, sigma[B], **cond)``.

    Args:
        net: the raw network F (not an already preconditioned model; for EDM/EDM2 pickles, which
            hold the preconditioned model, use :func:`erkguid.loading.load_edm_pickle`).
        sigma_data: the data standard deviation sd (0.5 for EDM/EDM2 pixel and latent models).
        c_noise: map from sigma ``[B]`` to the network's noise label (default ln(sigma)/4).
        net_dtype: dtype the network is run in (e.g. ``torch.float16``); default: the state's dtype.
    """

    def __init__(
        self,
        net: Net,
        sigma_data: float = 0.5,
        c_noise: Callable[[Tensor], Tensor] = edm_c_noise,
        net_dtype: torch.dtype | None = None,
    ) -> None:
        if not callable(net):
            raise TypeError("net must be callable as net(x_in, c_noise, **cond)")
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.c_noise = c_noise
        self.net_dtype = net_dtype

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        s = sigma_vector(sigma, x, positive=True)  # c_noise = ln(sigma)/4 needs sigma > 0
        wd = acc_dtype(x.dtype)
        c_skip, c_out, c_in = (c.to(wd) for c in edm_scalings(s, self.sigma_data)[:3])
        nd = self.net_dtype or x.dtype
        f = check_output(self.net((col(c_in, x) * x).to(nd), self.c_noise(s).to(wd), **cond), x, "net")
        return (col(c_skip, x) * x.to(wd) + col(c_out, x) * f.to(wd)).to(x.dtype)
