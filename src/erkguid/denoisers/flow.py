"""Rectified-flow / flow-matching velocity models as EDM denoisers.

With x_t = (1 - t) x0 + t eps and velocity v = eps - x0: x_t / (1 - t) = x0 + t/(1 - t) eps, so
sigma = t / (1 - t), t = sigma / (1 + sigma), x_t = x / (1 + sigma) and D = x0 = x_t - t v.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import Net, acc_dtype, check_output, col, sigma_vector


class FlowDenoiser:
    """Wrap a velocity network ``net(x_t, t[B] * t_scale, **cond) -> v = eps - x0`` as ``D(x, sigma[B])``.

    Args:
        net: the velocity network.
        t_scale: the network's time scale (1 for t in [0, 1]; 1000 for SD3/FLUX-style timesteps).
        net_dtype: dtype the network runs in; default the state's dtype.
    """

    def __init__(self, net: Net, t_scale: float = 1.0, net_dtype: torch.dtype | None = None) -> None:
        if not callable(net):
            raise TypeError("net must be callable as net(x_t, t, **cond)")
        if not t_scale > 0:
            raise ValueError(f"t_scale must be > 0, got {t_scale!r}")
        self.net, self.t_scale, self.net_dtype = net, float(t_scale), net_dtype

    def __call__(self, x: Tensor, sigma: Tensor | float, **cond: Any) -> Tensor:
        s = sigma_vector(sigma, x)
        wd = acc_dtype(x.dtype)
        t = s / (1 + s)
        x_t = col((1 - t).to(wd), x) * x.to(wd)
        v = check_output(self.net(x_t.to(self.net_dtype or x.dtype), (t * self.t_scale).to(wd), **cond), x, "net")
        return (x_t - col(t.to(wd), x) * v.to(wd)).to(x.dtype)
