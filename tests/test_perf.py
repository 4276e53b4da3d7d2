"""Sampler cost invariants (issue 13): no host syncs in the adapters, no retained tensor that nothing reads."""

from __future__ import annotations

import math

import pytest
import torch

import erkguid as eg
from erkguid._batch import sigma_vector
from erkguid.denoisers import DiscreteVPSchedule, EDMDenoiser, FlowDenoiser, LinearVPSchedule, VPDenoiser
from erkguid.experiments.syncs import count_host_reads
from erkguid.loading import EDMNetDenoiser


def _same_shape_net(x: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
    return torch.tanh(x) * (1 + t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype))


class _EDMNet(torch.nn.Module):
    label_dim = 3

    def forward(self, x, sigma, class_labels=None, **_):
        return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2) + class_labels.sum(1).reshape(-1, 1, 1, 1)


def _adapters() -> list[tuple[str, object, tuple[int, ...], dict]]:
    labels = torch.tensor([0, 2, 1, 3])
    return [
        ("gmm digits64", eg.digits_64d(), (64,), {}),
        ("learned digits-main", eg.load_learned("digits-main"), (64,), {"class_labels": labels}),
        ("edm", EDMDenoiser(_same_shape_net), (3, 4, 4), {}),
        ("vp discrete eps", VPDenoiser(_same_shape_net, DiscreteVPSchedule.from_betas()), (3, 4, 4), {}),
        ("vp linear v", VPDenoiser(_same_shape_net, LinearVPSchedule(), prediction="v_prediction"), (3, 4, 4), {}),
        ("flow", FlowDenoiser(_same_shape_net), (3, 4, 4), {}),
        ("edm pickle net", EDMNetDenoiser(_EDMNet()), (3, 4, 4), {"class_labels": torch.tensor([0, 2, 1, 0])}),
    ]


@pytest.mark.parametrize("name,den,shape,cond", _adapters(), ids=[a[0] for a in _adapters()])
def test_adapters_make_no_host_read_of_device_tensors(name, den, shape, cond):
    """On the "meta" device every value read raises, so an evaluation that completes there read
    nothing back; the counter confirms zero reads of device tensors (a GPU run's syncs)."""
    x = torch.randn(4, *shape)
    sigma = torch.tensor([0.1, 1.0, 10.0, 80.0])
    ref = den(x, sigma, **cond)  # CPU: values checked, finite result
    assert ref.shape == x.shape and torch.isfinite(ref).all()
    meta = {k: v.to("meta") for k, v in cond.items()}
    with count_host_reads() as reads:
        out = den(x.to("meta"), sigma.to("meta"), **meta)
    assert out.shape == x.shape and out.device.type == "meta"
    assert reads.on("meta") == 0, reads


def test_count_host_reads_sees_every_kind_of_read():
    t = torch.ones(3)
    with count_host_reads() as reads:
        bool(t.all()), float(t[0]), int(t[1]), t.tolist(), f"{t[0]:.2f}", t.numpy()
    assert reads.on("cpu") == 6 and reads.total == 6, reads  # __format__'s inner item() is not counted twice
    with count_host_reads() as reads:
        (t * 2).sum()
    assert reads.total == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, torch.tensor([0.5, -0.1]), torch.tensor([math.nan, 1.0])])
def test_sigma_vector_still_rejects_bad_sigma_on_the_host(bad):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        sigma_vector(bad, x)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        eg.digits_64d()(torch.zeros(2, 64), bad)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        EDMDenoiser(_same_shape_net)(x, 0.0 if not isinstance(bad, torch.Tensor) else bad)


def test_sigma_vector_python_float_matches_tensor_path():
    x = torch.zeros(3, 2)
    for dtype in (torch.float64, torch.float32, None):
        a, b = sigma_vector(0.3, x, dtype=dtype), sigma_vector(torch.tensor(0.3, dtype=dtype or torch.float32), x, dtype=dtype)
        assert a.dtype == b.dtype and torch.equal(a, b) and a.shape == (3,)
