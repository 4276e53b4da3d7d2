"""Core behaviour: schedules, Euler/Heun, ERK-Guid (Alg. 1), estimators, errors, precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import erkguid as eg
from erkguid._batch import bdot, bnorm
from erkguid.correction import ErkPair, erk_guid, estimate
from erkguid.metrics import global_error
from erkguid.tune import CountingDenoiser


def random_mixture(dim: int = 3, k: int = 4, seed: int = 0) -> eg.GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, dim, dim, generator=g, dtype=torch.float64) * 0.3
    covs = a @ a.transpose(1, 2) + 1e-3 * torch.eye(dim, dtype=torch.float64)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    return eg.GaussianMixture(torch.rand(k, generator=g, dtype=torch.float64) + 0.1, means, covs)


def noise(n: int, shape: tuple[int, ...], dtype=torch.float64, sigma: float = 80.0) -> torch.Tensor:
    return eg.randn_from_seeds(range(n), shape, sigma=sigma, dtype=dtype)


# --------------------------------------------------------------------------- schedules
def test_edm_sigmas_formula_and_zero():
    s = eg.edm_sigmas(5, 0.002, 80.0, 7.0)
    assert s.shape == (6,) and s[-1] == 0 and s.dtype == torch.float64
    i = torch.arange(5, dtype=torch.float64)
    expect = (80 ** (1 / 7) + i / 4 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1], expect, rtol=1e-14, atol=0)
    assert s[0] == pytest.approx(80.0) and s[-2] == pytest.approx(0.002)


def test_logsnr_and_time_uniform_grids():
    s = eg.logsnr_sigmas(6)
    d = torch.diff(s[:-1].log())
    torch.testing.assert_close(d, torch.full_like(d, d[0].item()))
    v = eg.vp_time_uniform_sigmas(6)
    assert v[0] == pytest.approx(80.0) and v[-2] == pytest.approx(0.002) and v[-1] == 0
    assert (torch.diff(v) < 0).all()


@pytest.mark.parametrize(
    "sigmas, match",
    [
        ([1.0, 2.0, 0.0], "strictly decreasing"),
        ([1.0, 1.0, 0.0], "strictly decreasing"),
        ([1.0, -0.5, 0.0], "non-negative"),
        ([[1.0, 0.0]], "1-D"),
        ([float("nan"), 0.0], "finite"),
    ],
)
def test_bad_sigmas_are_named(sigmas, match):
    m = eg.isotropic_gaussian(2)
    with pytest.raises(ValueError, match=f"sigmas.*{match}|{match}.*sigmas"):
        eg.sample(m, torch.zeros(2, 2), sigmas)
    with pytest.raises(ValueError, match="sigmas must end in 0"):  # a schedule's own check still wants 0
        eg.check_sigmas([1.0, 0.5, 0.1])


# --------------------------------------------------------------------------- convergence order
@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_empirical_order_on_gaussian(solver, order):
    m = eg.isotropic_gaussian(dim=4, std=0.5, mean=0.3)
    x = noise(16, (4,))
    exact = m.ode_solution(x, 80.0, 0.0)
    steps = [16, 32, 64, 128]
    errs = [global_error(eg.sample(m, x, eg.edm_sigmas(n), solver=solver), exact).mean().item() for n in steps]
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (slope, errs)


def test_reference_solve_matches_closed_form():
    m = eg.isotropic_gaussian(dim=3, std=0.4, mean=-0.2)
    x = noise(8, (3,))
    ref = eg.reference_solve(m, x, 80.0, rtol=1e-9, atol=1e-10)
    assert (ref.x - m.ode_solution(x, 80.0, 0.0)).norm(dim=1).max() < 1e-7
    assert (ref.nfe > 10).all()


# --------------------------------------------------------------------------- ERK-Guid invariants
def test_w_stiff_zero_is_bit_identical_to_plain_heun():
    m = eg.tree_2d()
    x = noise(64, (2,), torch.float32)
    plain = eg.sample(m, x, eg.edm_sigmas(8))
    for w_con in (0.0, 0.5, 3.0):
        tr = eg.Trace()
        out = eg.sample(m, x, eg.edm_sigmas(8), w_stiff=0.0, w_con=w_con, callback=tr)
        assert torch.equal(out, plain)
        assert torch.nan_to_num(tr.correction_norm).abs().max() == 0


def test_heun_matches_independent_edm_algorithm():
    m = random_mixture()
    x = noise(5, (3,))
    s = eg.edm_sigmas(7)
    y = x.clone()
    for i in range(7):
        t, tn = float(s[i]), float(s[i + 1])
        d = (y - m(y, torch.full((5,), t, dtype=torch.float64))) / t
        xe = y + (tn - t) * d
        if tn > 0:
            d2 = (xe - m(xe, torch.full((5,), tn, dtype=torch.float64))) / tn
            y = y + (tn - t) * (d + d2) / 2
        else:
            y = xe
    torch.testing.assert_close(eg.sample(m, x, s), y, rtol=0, atol=1e-12)


def test_nfe_equal_for_heun_and_erk_and_first_step_uncorrected():
    m = eg.tree_2d()
    x = noise(32, (2,), torch.float32)
    for w in (0.0, 1.0):
        c = CountingDenoiser(m)
        seen: dict[int, dict] = {}
        eg.sample(c, x, eg.edm_sigmas(9), w_stiff=w, w_con=0.0, callback=lambda info, seen=seen: seen.setdefault(info["i"], info))
        assert c.calls == 2 * 9 - 1
        assert seen[0]["rho"] is None and seen[0]["correction_norm"] is None
        assert seen[8]["rho"] is None  # the final Euler step is never corrected
        if w:
            assert (seen[4]["correction_norm"] > 0).any()
    first = {}
    for w in (0.0, 2.0):  # w_stiff=4 diverges on this grid (DivergenceError at step 4)
        eg.sample(m, x, eg.edm_sigmas(9), w_stiff=w, callback=lambda info, w=w: first.setdefault(w, info["x"].clone()))
    assert torch.equal(first[0.0], first[2.0])


def algorithm1(model, x, sigmas, w_stiff, w_con):
    """Straightforward transcription of the paper's Algorithm 1 (EDM final Euler step)."""
    n = len(sigmas) - 1
    q = None
    for i in range(n):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        f = (x - model(x, torch.full((x.shape[0],), s, dtype=x.dtype))) / s
        h = s - sn
        g = torch.zeros_like(x)
        if i != 0:
            xe_prev, fe_prev = q
            df, dx = f - fe_prev, x - xe_prev
            for b in range(x.shape[0]):
                ndf, ndx = df[b].norm(), dx[b].norm()
                if ndx == 0 or ndf == 0:
                    continue
                v = df[b] / ndf
                rho = ndf / ndx
                beta = float(rho > w_con)
                z = w_stiff * h * rho
                g[b] = beta * z**2 * torch.dot(f[b], v) * v
        xe = x - h * f
        if sn > 0:
            fe = (xe - model(xe, torch.full((x.shape[0],), sn, dtype=x.dtype))) / sn
            x = x - h * (0.5 * f + 0.5 * fe) - h * g
            q = (xe, fe)
        else:
            x = xe
    return x


@pytest.mark.parametrize("w_stiff, w_con", [(1.0, 0.5), (0.5, 0.0), (2.0, 5.0), (0.3, 1e9)])
def test_algorithm1_conformance(w_stiff, w_con):
    m = random_mixture(dim=3, k=5, seed=3)
    x = noise(6, (3,), sigma=10.0)
    s = eg.edm_sigmas(6, sigma_max=10.0)
    ours = eg.sample(m, x, s, w_stiff=w_stiff, w_con=w_con)
    ref = algorithm1(m, x, s, w_stiff, w_con)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-10)
    plain = eg.sample(m, x, s)
    assert ((ours - plain).abs().max() > 1e-6) == (w_con < 1e9)  # the correction really acts (or is gated off)


# --------------------------------------------------------------------------- estimators
def test_estimators_on_linear_drift():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    lam = torch.tensor([-9.0, 3.0, 2.0, -1.0, 0.5, 0.1], dtype=torch.float64)
    a = q @ torch.diag(lam) @ q.T
    v1 = q[:, 0]
    x = torch.randn(1, 6, generator=g, dtype=torch.float64)
    other = q[:, 1:] @ torch.randn(5, generator=g, dtype=torch.float64)
    errs = []
    for delta in (1.0, 0.1, 0.01, 0.0):
        x_alt = x - 1e-3 * (v1 + delta * other)
        est = estimate(ErkPair(x, x @ a, x_alt, x_alt @ a, h=0.1))
        errs.append(abs(est.rho.item() - 9.0))
        if delta == 0.0:
            assert est.rho.item() == pytest.approx(9.0, rel=1e-10)
            assert abs(torch.dot(est.v[0], v1).item()) == pytest.approx(1.0, rel=1e-10)
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-8


def test_zero_dx_gets_no_correction():
    x = torch.randn(3, 4, dtype=torch.float64)
    f = torch.randn(3, 4, dtype=torch.float64)
    x_alt, f_alt = x.clone(), f.clone()
    x_alt[1] += 0.1
    f_alt[1] -= 0.3
    c = erk_guid(x, ErkPair(x, f, x_alt, f_alt, h=0.5), w_stiff=2.0, w_con=0.0)
    assert torch.isfinite(c.x).all()
    assert torch.equal(c.x[0], x[0]) and torch.equal(c.x[2], x[2]) and c.rho[0] == 0
    assert not torch.equal(c.x[1], x[1])
    # Eq. 19 by hand for sample 1
    df, dx = f[1] - f_alt[1], x[1] - x_alt[1]
    v, rho = df / df.norm(), df.norm() / dx.norm()
    expect = x[1] - 0.5 * (2.0 * 0.5 * rho) ** 2 * torch.dot(f[1], v) * v
    torch.testing.assert_close(c.x[1], expect)
    assert c.norm[1] == pytest.approx((expect - x[1]).norm().item())


def test_sign_and_scalings():
    x = torch.zeros(1, 2, dtype=torch.float64)
    f = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    dx, df = torch.tensor([[0.1, 0.0]], dtype=torch.float64), torch.tensor([[0.4, 0.0]], dtype=torch.float64)
    pair = ErkPair(x, f, x - dx, f - df, h=0.5)
    z = 1.0 * 0.5 * 4.0
    for scaling, s in (("z2", z * z), ("abs", z), ("alpha", (math.exp(z) - 1) / z - 1 - z / 2)):
        c = erk_guid(x, pair, 1.0, 0.0, scaling)
        assert c.x[0, 0].item() == pytest.approx(-0.5 * s)
    neg = ErkPair(pair.x, pair.f, pair.x_alt, pair.f_alt, pair.h, sign=-1.0)
    assert erk_guid(x, neg, 1.0, 0.0).x[0, 0].item() == pytest.approx(0.5 * z * z)
    zz = torch.tensor([0.0, 1e-5, 1e-2, 1.0, -2.0], dtype=torch.float64)
    exact = torch.where(zz == 0, torch.zeros_like(zz), torch.expm1(zz) / zz - 1 - zz / 2)
    torch.testing.assert_close(eg.alpha(zz), exact, rtol=1e-6, atol=1e-15)


# --------------------------------------------------------------------------- batch invariance
# The promise (README "Guarantees", docs/validation.md): erkguid's own arithmetic is row-wise, so with a
# row-wise denoiser a sample is bit-identical alone or in any batch, in any dtype; models built on matrix
# products (BLAS picks kernels by batch size) agree to 1e-10 in float64 and 1e-4 in float32.
def _rowwise_image(xx, sigma):  # elementwise, so the model itself is batch-invariant
    sig = sigma.reshape(-1, 1, 1, 1).to(xx.dtype)
    return torch.tanh(xx) * 0.5 * sig / (1 + sig) + xx * 0.25 / (0.25 + sig**2)


def _chunked(model, x, s, seeds, b, **kw):
    return torch.cat([eg.sample(model, x[k : k + b], s, seeds=seeds[k : k + b], **kw) for k in range(0, len(x), b)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("solver", ["heun", "dpm2", "dpmpp_2m", "unipc", "heun_pc"])
def test_batch_invariance_bit_identical_with_rowwise_models(dtype, solver):
    s = eg.edm_sigmas(8)
    seeds = list(range(8))
    kw = {"solver": solver, "w_stiff": 1.0 if solver in ("heun", "dpm2", "heun_pc") else 0.25, "w_con": 0.5}  # 1.0 diverges
    for model, shape in ((eg.tree_2d(), (2,)), (_rowwise_image, (4, 16, 16))):
        x = noise(8, shape, dtype)
        batch = eg.sample(model, x, s, seeds=seeds, **kw)
        for b in (1, 3, 4):
            assert torch.equal(_chunked(model, x, s, seeds, b, **kw), batch)
        picked = [7, 2]  # batch composition and order do not matter either
        assert torch.equal(eg.sample(model, x[picked], s, seeds=[seeds[k] for k in picked], **kw), batch[picked])


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_batch_invariance_matrix_product_model_to_the_documented_tolerance(dtype, atol):
    """digits64 (an exact mixture evaluated with matrix products): float64 to 1e-10, float32 to 1e-4 -
    and not bit for bit in float32, which is why the promise is a tolerance."""
    m = eg.digits_64d(image_shape=True)
    x = noise(16, (1, 8, 8), dtype)
    s = eg.edm_sigmas(18)
    seeds = list(range(16))
    batch = eg.sample(m, x, s, w_stiff=1.0, w_con=0.5, seeds=seeds)
    diffs = [(_chunked(m, x, s, seeds, b, w_stiff=1.0, w_con=0.5) - batch).abs().max().item() for b in (1, 2, 3, 5)]
    assert max(diffs) <= atol


# --------------------------------------------------------------------------- errors
def test_clear_errors():
    m = eg.tree_2d()
    x = noise(4, (2,), torch.float32)
    s = eg.edm_sigmas(4)
    with pytest.raises(ValueError, match="w_stiff"):
        eg.sample(m, x, s, w_stiff=-1.0)
    with pytest.raises(ValueError, match="w_con"):
        eg.sample(m, x, s, w_con=-0.1)
    with pytest.raises(ValueError, match="solver must be one of"):
        eg.sample(m, x, s, solver="rk4")
    with pytest.raises(ValueError, match="scaling"):
        eg.sample(m, x, s, scaling="cubic")
    with pytest.raises(ValueError, match="shape"):
        eg.sample(lambda xx, sg: xx[:, :1], x, s)
    with pytest.raises(ValueError, match="solver_options"):
        eg.sample(m, x, s, solver_options={"r": 0.5})

    def nan_at_step(xx, sg):
        out = m(xx, sg)
        return out * float("nan") if sg[0] < 1.0 else out

    with pytest.raises(eg.NonFiniteError, match=r"step \d+") as e:
        eg.sample(nan_at_step, x, s)
    bad_step = int(str(e.value).split("step ")[1].split()[0])
    assert float(s[bad_step]) < 1.0 or float(s[bad_step + 1]) < 1.0


def test_conditioning_passes_through():
    m = eg.tree_2d()
    x = noise(16, (2,), torch.float32)
    labels = torch.tensor([0, 1] * 8)
    out = eg.sample(m, x, eg.edm_sigmas(16), class_labels=labels)
    lp0 = m.log_prob(out, class_labels=torch.zeros(16, dtype=torch.long))
    lp1 = m.log_prob(out, class_labels=torch.ones(16, dtype=torch.long))
    assert ((lp0 > lp1) == (labels == 0)).float().mean() > 0.9


# --------------------------------------------------------------------------- precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_denoiser(dtype):
    m = eg.tree_2d()

    def den(xx, sigma):
        return m(xx.to(dtype), sigma.to(dtype)).to(dtype)

    x = noise(64, (2,), torch.float32)
    out = eg.sample(den, x, eg.edm_sigmas(16), w_stiff=1.0, w_con=0.5)
    assert torch.isfinite(out).all() and out.dtype == torch.float32
    out_h = eg.sample(den, x.to(dtype), eg.edm_sigmas(16), w_stiff=1.0, w_con=0.5)
    assert torch.isfinite(out_h).all() and out_h.dtype == dtype
    assert (out_h.float() - out).norm(dim=1).median() < 0.02  # only the initial rounding of x differs


def test_reductions_accumulate_in_float32():
    x = torch.full((2, 4, 64, 64), 200.0, dtype=torch.float16)  # sum of squares overflows fp16
    assert torch.isfinite(bnorm(x)).all()
    assert bnorm(x)[0].item() == pytest.approx(200.0 * 128.0, rel=1e-5)
    assert bdot(x, x).dtype == torch.float32


# --------------------------------------------------------------------------- exact models
def test_gmm_denoiser_is_tweedie_of_log_prob():
    m = random_mixture(dim=3, k=4, seed=1)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(m.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(m(x.detach(), sigma), x.detach() + sigma[:, None] ** 2 * grad, rtol=1e-10, atol=1e-10)


def test_gmm_sampling_and_log_prob_normalised():
    m = eg.tree_2d()
    xs = m.sample(20000, seed=1, dtype=torch.float64)
    w = m.weights
    mean = (w[:, None] * m.means).sum(0)
    torch.testing.assert_close(xs.mean(0), mean, atol=0.02, rtol=0)
    g = torch.linspace(-2, 2, 401, dtype=torch.float64)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    p = m.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1), sigma=0.05).exp()
    assert p.sum().item() * (4 / 400) ** 2 == pytest.approx(1.0, abs=0.02)


def test_digits_mixture_loads():
    m = eg.digits_64d()
    assert m.dim == 64 and m.num_components == 20 and m.num_classes == 10
    assert eg.digits_64d(image_shape=True).sample(3, seed=0).shape == (3, 1, 8, 8)
