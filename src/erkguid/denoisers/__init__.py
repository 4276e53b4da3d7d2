"""Adapters that turn a network into the EDM denoiser ``D(x, sigma[B], **cond)`` the samplers use.

* :class:`EDMDenoiser` -- EDM/EDM2 preconditioning (c_skip, c_out, c_in, c_noise) around a raw net.
* :class:`VPDenoiser` -- epsilon-, v- or x0-prediction VP models on a discrete DDPM schedule
  (:class:`DiscreteVPSchedule`) or the continuous linear-beta schedule (:class:`LinearVPSchedule`).
* :class:`FlowDenoiser` -- rectified-flow velocity models (x_t = (1 - t) x0 + t eps).

Every adapter maps the variance-exploding state ``x = x0 + sigma * eps`` to the network's own
input convention, calls the network once and returns ``D(x; sigma)`` in ``x``'s dtype.
"""

from .edm import EDMDenoiser
from .flow import FlowDenoiser
from .vp import DiscreteVPSchedule, LinearVPSchedule, VPDenoiser

__all__ = ["DiscreteVPSchedule", "EDMDenoiser", "FlowDenoiser", "LinearVPSchedule", "VPDenoiser"]
