"""Reference spectra: exact Jacobian and JVP power iteration vs torch.linalg.eigh; orientation; ERK steps."""

from __future__ import annotations

import pytest
import torch

from erkguid import diagnostics as dg
from erkguid.models import tree_2d


def _linear(d: int = 6, seed: int = 0) -> tuple[torch.Tensor, callable]:
    """A linear drift f(x) = A x with A symmetric, spectrum {-9, 3, 1, 0.5, ...}: D(x; s) = x - s A x."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.tensor([-9.0, 3.0, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)[:d]
    a = q @ torch.diag(lam) @ q.T

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma[:, None] * (x @ a.T)

    return a, denoiser


def test_exact_jacobian_and_spectrum_match_eigh():
    a, den = _linear()
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = dg.exact_jacobian(den, x, 0.3)
    assert torch.allclose(jac, a.expand(5, 6, 6), atol=1e-12)
    sp = dg.exact_spectrum(den, x, 0.3)
    ev, evec = torch.linalg.eigh(a)
    order = ev.abs().argsort(descending=True)
    assert torch.allclose(sp.eigvals, ev[order].expand(5, 6), atol=1e-10)
    assert torch.allclose(sp.stiffness, torch.full((5,), 9.0, dtype=torch.float64))
    # eigenvectors equal eigh's up to sign, and every one points toward the drift
    f = x @ a.T
    for k in range(6):
        v = sp.vector(k, (6,))
        assert torch.allclose(dg.cosine(v, evec[:, order[k]].expand(5, 6)).abs(), torch.ones(5, dtype=torch.float64), atol=1e-8)
        assert (dg.cosine(v, f) >= 0).all()


def test_power_iteration_matches_eigh_and_is_oriented():
    a, den = _linear()
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    res = dg.power_iteration(den, x, 0.5, iters=60, seeds=[3, 4, 5, 6])
    assert torch.allclose(res.eigval, torch.full((4,), -9.0, dtype=torch.float64), rtol=1e-8)
    ev, evec = torch.linalg.eigh(a)
    v1 = evec[:, ev.abs().argmax()]
    assert torch.allclose(dg.cosine(res.vector, v1.expand(4, 6)).abs(), torch.ones(4, dtype=torch.float64), atol=1e-8)
    assert (dg.bdot(res.vector, x @ a.T) >= 0).all()
    assert res.history.shape == (60, 4)
    # ratio |3/9| per iteration: the estimate error after k iterations shrinks geometrically
    err = (res.history - 9.0).abs()
    assert (err[-1] < 1e-10).all() and (err[5] > err[20]).all()
    # per-sample: a sample's result does not depend on its batch
    one = dg.power_iteration(den, x[2:3], 0.5, iters=60, seeds=[5])
    assert torch.allclose(one.history[:, 0], res.history[:, 2], rtol=1e-12)


def test_power_iteration_bad_args():
    _, den = _linear()
    x = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="iters"):
        dg.power_iteration(den, x, 0.5, iters=0)
    with pytest.raises(ValueError, match="seeds"):
        dg.power_iteration(den, x, 0.5, seeds=[1])
    with pytest.raises(ValueError, match="sigma"):
        dg.exact_jacobian(den, x, 0.0)


def test_orient_flips_only_negative():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    f = torch.tensor([[-2.0, 1.0], [3.0, 2.0]])
    assert torch.equal(dg.orient(v, f), torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))


def test_gmm_jacobian_matches_finite_differences_and_is_symmetric():
    m = tree_2d()
    x = m.sample(16, seed=0, sigma=0.05, dtype=torch.float64)
    sigma = 0.05
    jac = dg.exact_jacobian(m, x, sigma)
    f = dg.drift_fn(m, sigma)
    eps = 1e-6
    fd = torch.stack([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in torch.eye(2, dtype=torch.float64)], dim=2)
    assert torch.allclose(jac, fd, rtol=1e-5, atol=1e-5 * jac.abs().max())
    assert torch.allclose(jac, jac.transpose(1, 2), rtol=1e-8, atol=1e-8 * jac.abs().max())
    # power iteration agrees with the exact spectrum on the mixture too
    pw = dg.power_iteration(m, x, sigma, iters=300)
    sp = dg.spectrum(jac, f(x))
    gap = (sp.eigvals[:, 0].abs() - sp.eigvals[:, 1].abs()) / sp.eigvals[:, 0].abs()
    ok = gap > 0.05
    assert ok.sum() >= 8
    assert torch.allclose(pw.eigval[ok], sp.eigvals[ok, 0], rtol=1e-6)


def test_heun_euler_step_and_substep_reference_on_gaussian():
    from erkguid.models import isotropic_gaussian

    m = isotropic_gaussian(dim=3, std=0.5)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = m.ode_solution(x, 1.0, 0.6)
    xh, xe = dg.heun_euler_step(m, x, 1.0, 0.6)
    assert torch.allclose(xe, x - 0.4 * dg.drift_fn(m, 1.0)(x))
    ref = dg.substep_reference(m, x, 1.0, 0.6, substeps=100)
    ref_err, heun_err = (ref - exact).norm(dim=1), (xh - exact).norm(dim=1)
    assert (ref_err < 1e-3 * heun_err).all() and (ref_err < 1e-5).all()


def test_quantile_bins_and_binned_median():
    v = torch.arange(8.0)
    b = dg.quantile_bins(v, 4)
    assert b.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert dg.binned_median(v * 10, b, 4) == [0.0, 20.0, 40.0, 60.0]


def test_eigenspace_alignment_equals_abs_cos_for_a_simple_top_eigenvalue():
    a, den = _linear()  # spectrum -9, 3, 1, ...: lambda_max is simple
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    u = torch.randn(5, 6, dtype=torch.float64, generator=g)
    sp = dg.exact_spectrum(den, x, 0.3)
    al = dg.eigenspace_alignment(u, sp)
    assert al.dim.tolist() == [1] * 5 and al.ambient_dim == 6
    assert torch.allclose(al.alignment, dg.cosine(u, sp.vector(0, (6,))).abs(), atol=1e-12)
    assert torch.allclose(al.random_baseline(), torch.full((5,), (1 / 6) ** 0.5, dtype=torch.float64))
    # tol = 0.7 takes in |lambda| = 3 too: the fraction then counts both coordinates
    wide = dg.eigenspace_alignment(u, sp, tol=0.7)
    c1, c2 = dg.bdot(u, sp.vector(0, (6,))), dg.bdot(u, sp.vector(1, (6,)))
    assert wide.dim.tolist() == [2] * 5
    assert torch.allclose(wide.alignment, (c1**2 + c2**2).sqrt() / dg.bnorm(u), atol=1e-12)
    with pytest.raises(ValueError, match="tol"):
        dg.eigenspace_alignment(u, sp, tol=1.0)
    with pytest.raises(ValueError, match="u must be"):
        dg.eigenspace_alignment(u[:, :5], sp)


def test_eigenspace_alignment_on_a_planted_degenerate_top_eigenspace():
    d = 8
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.tensor([-5.0, -5.0, 5.0, -4.9, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)  # top space: 4 dims within 5%
    a = q @ torch.diag(lam) @ q.T

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x - sigma[:, None] * (x @ a.T)

    x = torch.randn(6, d, dtype=torch.float64, generator=g)
    sp = dg.exact_spectrum(den, x, 0.2)
    # any vector of the planted space is fully aligned, whatever the arbitrary v_1 eigh picked
    coef = torch.randn(6, 4, dtype=torch.float64, generator=g)
    inside = coef @ q[:, :4].T
    al = dg.eigenspace_alignment(inside, sp)
    assert al.dim.tolist() == [4] * 6
    assert torch.allclose(al.alignment, torch.ones(6, dtype=torch.float64), atol=1e-10)
    assert (dg.cosine(inside, sp.vector(0, (d,))).abs() < 0.999).all()  # the v1 cosine is not
    # a vector orthogonal to it is not aligned at all; a mix gets its norm fraction; zero gives 0
    outside = torch.randn(6, 4, dtype=torch.float64, generator=g) @ q[:, 4:].T
    assert torch.allclose(dg.eigenspace_alignment(outside, sp).alignment, torch.zeros(6, dtype=torch.float64), atol=1e-10)
    mix = inside / dg.bnorm(inside)[:, None] + 2 * outside / dg.bnorm(outside)[:, None]
    assert torch.allclose(dg.eigenspace_alignment(mix, sp).alignment, torch.full((6,), 5**-0.5, dtype=torch.float64))
    assert torch.equal(dg.eigenspace_alignment(torch.zeros(6, d, dtype=torch.float64), sp).alignment,
                       torch.zeros(6, dtype=torch.float64))
    # a tighter tolerance drops -4.9: the space shrinks to the three exact +-5 directions
    assert dg.eigenspace_alignment(inside, sp, tol=0.01).dim.tolist() == [3] * 6
    assert torch.allclose(al.random_baseline(), torch.full((6,), (4 / 8) ** 0.5, dtype=torch.float64))
