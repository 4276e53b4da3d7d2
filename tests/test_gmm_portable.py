"""Exact mixture samples must not depend on the eigenbasis LAPACK returns (repeated eigenvalues, signs)."""

from __future__ import annotations

import pytest
import torch

from erkguid import GaussianMixture, digits_64d

_eigh = torch.linalg.eigh


def _rotated_eigh(a: torch.Tensor, *args, **kwargs):
    """eigh with another valid answer: a random orthogonal mix inside every repeated eigenvalue's
    eigenspace and random signs, as a different LAPACK/MKL code path may return."""
    evals, evecs = _eigh(a, *args, **kwargs)
    g = torch.Generator().manual_seed(5)
    out = evecs.clone()
    for k in range(evals.shape[0]):
        lam = evals[k]
        start = 0
        while start < lam.numel():
            stop = start + 1
            while stop < lam.numel() and abs(float(lam[stop] - lam[start])) <= 1e-12 * float(lam.abs().max()):
                stop += 1
            q, _ = torch.linalg.qr(torch.randn(stop - start, stop - start, generator=g, dtype=evecs.dtype))
            out[k, :, start:stop] = evecs[k, :, start:stop] @ q
            start = stop
    return evals, out


def _degenerate_mixture() -> GaussianMixture:
    # two components in 6-D with 3-fold and 2-fold repeated eigenvalues (like digits64's covariance floor)
    g = torch.Generator().manual_seed(0)
    covs = []
    for lam in ([2.0, 0.5, 0.5, 0.5, 0.01, 0.01], [1.0, 1.0, 0.3, 0.3, 0.3, 0.3]):
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
        covs.append(q @ torch.diag(torch.tensor(lam, dtype=torch.float64)) @ q.T)
    return GaussianMixture([0.3, 0.7], torch.randn(2, 6, generator=g, dtype=torch.float64), torch.stack(covs))


@pytest.mark.parametrize("make", [_degenerate_mixture, digits_64d], ids=["degenerate6d", "digits64"])
def test_exact_samples_do_not_depend_on_the_eigenbasis(monkeypatch: pytest.MonkeyPatch, make) -> None:
    a = make().sample(256, seed=3, sigma=0.1, dtype=torch.float64)
    monkeypatch.setattr(torch.linalg, "eigh", _rotated_eigh)
    m = make()
    b = m.sample(256, seed=3, sigma=0.1, dtype=torch.float64)
    # the rotated basis is a different factor (it would move the old U sqrt(L) z samples by O(1)) ...
    assert not torch.allclose(m.evecs, _eigh(m.covs)[1])
    # ... but S^{1/2} is unique: the samples agree to rounding
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_sampling_factor_is_the_symmetric_square_root() -> None:
    m = _degenerate_mixture()
    torch.testing.assert_close(m.sqrt_covs @ m.sqrt_covs, m.covs, rtol=0, atol=1e-13)
    torch.testing.assert_close(m.sqrt_covs, m.sqrt_covs.transpose(1, 2), rtol=0, atol=0)
    # sample moments: mean and covariance of p_data within their sampling error (n = 200k)
    x = m.sample(200_000, seed=1, dtype=torch.float64)
    mean = (m.weights[:, None] * m.means).sum(0)
    cov = sum(w * (c + torch.outer(mu - mean, mu - mean)) for w, mu, c in zip(m.weights, m.means, m.covs))
    se = (torch.diagonal(cov) / x.shape[0]).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.03)
