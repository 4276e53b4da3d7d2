"""AdaSDE: DPM-2 reduction, schedule, NFE, coefficient ranges, seeds, save/load, distillation."""

from __future__ import annotations

import math

import pytest
import torch

from erkguid import AdaSDECoefficients, Trace, sample, tree_2d, vp_time_uniform_sigmas
from erkguid.noise import randn_from_seeds
from erkguid.solvers import SOLVERS
from erkguid.solvers.adasde_coeffs import GAMMA_BIAS


def dpm2_reference(model, x: torch.Tensor, levels: list[float]) -> list[torch.Tensor]:
    """Plain DPM-Solver-2 (log-sigma midpoint, VE eps form), written out independently; states at every level."""
    out = [x]
    for s, t in zip(levels[:-1], levels[1:]):
        sig = torch.full((x.shape[0],), s, dtype=x.dtype)
        eps = (x - model(x, sig)) / s
        mid = math.sqrt(s * t)
        x2 = x + (mid - s) * eps
        eps2 = (x2 - model(x2, torch.full_like(sig, mid))) / mid
        x = x + (t - s) * eps2
        out.append(x)
    return out


@pytest.fixture(scope="module")
def model():
    return tree_2d()


def _x0(n: int = 64, seed: int = 0) -> torch.Tensor:
    return randn_from_seeds(range(seed, seed + n), (2,), sigma=80.0, dtype=torch.float64)


def test_time_uniform_schedule_matches_official_values() -> None:
    s = vp_time_uniform_sigmas(4)
    assert s[-1] == 0 and s.numel() == 5
    torch.testing.assert_close(s[:-1], torch.tensor([80, 6.9502, 1.2867, 0.002], dtype=torch.float64), rtol=0, atol=5e-5)
    assert s[0] == 80.0 and s[3] == 0.002  # exact end points
    torch.testing.assert_close(vp_time_uniform_sigmas(3)[1], torch.tensor(2.8237, dtype=torch.float64), rtol=0, atol=5e-5)


def test_neutral_gamma0_reduces_to_dpm2(model) -> None:
    levels = vp_time_uniform_sigmas(5)[:-1].tolist()
    coef = AdaSDECoefficients.neutral(levels, gamma_max=0.0, afs=False)
    x0 = _x0()
    states: list[torch.Tensor] = []
    x = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef},
               callback=lambda info: states.append(info["x"]))
    ref = dpm2_reference(model, x0, levels)
    for got, want in zip(states, ref[1:]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert len(states) == len(levels) and torch.equal(x, states[-2])  # the final step to 0 leaves the state as is
    # no coefficients at all: also DPM-2 on the positive levels
    y = sample(model, x0, coef.grid(), solver="adasde")
    torch.testing.assert_close(y, ref[-1], rtol=1e-12, atol=1e-12)
    if "dpm2" in SOLVERS:  # the registered DPM-Solver-2 agrees on every positive level
        other: list[torch.Tensor] = []
        sample(model, x0, coef.grid(), solver="dpm2", callback=lambda info: other.append(info["x"]))
        for got, want in zip(other[:-1], ref[1:]):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_nfe_counts_and_afs(model) -> None:
    for n_levels, nfe in ((3, 3), (4, 5), (5, 7)):
        levels = vp_time_uniform_sigmas(n_levels)[:-1]
        coef = AdaSDECoefficients.random(levels, seed=1, gamma_max=0.01)
        assert coef.nfe == nfe == SOLVERS["adasde"].nfe(n_levels, {"coefficients": coef})
        assert SOLVERS["adasde"].nfe(n_levels) == nfe + 1  # the neutral default takes no analytic first step
        tr0 = Trace()
        sample(model, _x0(8), coef.grid(), solver="adasde", seeds=range(8), callback=tr0)
        assert tr0.nfe == nfe + 1
        tr = Trace()
        sample(model, _x0(8), coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(8), callback=tr)
        assert tr.nfe == nfe
        tr2 = Trace()
        sample(model, _x0(8), coef.grid(), solver="adasde", seeds=range(8), callback=tr2,
               solver_options={"coefficients": coef, "denoise_to_zero": True})
        assert tr2.nfe == nfe + 1
    # AFS first direction is x / sqrt(1 + sigma^2): the first step needs no network call
    coef = AdaSDECoefficients.neutral(vp_time_uniform_sigmas(3)[:-1], gamma_max=0.0, afs=True)
    calls: list[float] = []

    def counting(x, sigma):
        calls.append(float(sigma[0]))
        return model(x, sigma)

    sample(counting, _x0(4), coef.grid(), solver="adasde", solver_options={"coefficients": coef})
    assert len(calls) == 3 and calls[0] == pytest.approx(math.sqrt(80 * 2.823688823962838))


def test_coefficient_ranges_and_mappings() -> None:
    levels = vp_time_uniform_sigmas(6)[:-1]
    big = {k: torch.tensor([-50.0, -3.0, 0.0, 3.0, 50.0], dtype=torch.float64) for k in ("r", "c", "a", "gamma")}
    coef = AdaSDECoefficients(levels, big, scale_dir=0.05, scale_time=0.2, gamma_max=0.02, gamma_min=2e-4)
    t = coef.table()
    assert all(0 <= v <= 1 for v in t["r"]) and t["r"][2] == 0.5
    assert all(0.95 <= v <= 1.05 for v in t["c"]) and t["c"][2] == 1.0
    assert all(0.8 <= v <= 1.2 for v in t["a"]) and t["a"][2] == 1.0
    assert t["gamma"][0] == 0.0  # the first step is deterministic
    assert all(2e-4 <= v <= 0.02 for v in t["gamma"][1:])
    assert t["gamma"][2] == pytest.approx(2e-4 + 0.6 * (0.02 - 2e-4), rel=1e-12)  # raw 0 -> 0.6 of the range
    assert GAMMA_BIAS == pytest.approx(2 * math.log(1.5))
    twin = AdaSDECoefficients(levels, big, gamma_max=0.0)
    assert twin.table()["gamma"] == [0.0] * 5
    with pytest.raises(ValueError, match="gamma_min"):
        AdaSDECoefficients(levels, gamma_max=1e-4, gamma_min=2e-4)
    with pytest.raises(ValueError, match="raw\\['r'\\]"):
        AdaSDECoefficients(levels, {"r": torch.zeros(3)})
    with pytest.raises(ValueError, match="sigmas"):
        AdaSDECoefficients([1.0, 2.0])


def test_grid_mismatch_and_missing_seeds_are_clear_errors(model) -> None:
    coef = AdaSDECoefficients.neutral(vp_time_uniform_sigmas(4)[:-1], gamma_max=0.01)
    with pytest.raises(ValueError, match="do not match the grid"):
        sample(model, _x0(4), vp_time_uniform_sigmas(5), solver="adasde", solver_options={"coefficients": coef})
    with pytest.raises(ValueError, match="seeds"):
        sample(model, _x0(4), coef.grid(), solver="adasde", solver_options={"coefficients": coef})
    with pytest.raises(ValueError, match="coefficients"):
        sample(model, _x0(4), coef.grid(), solver="adasde", solver_options={"coefficients": 3})


def test_batch_invariance_with_per_sample_seeds(model) -> None:
    coef = AdaSDECoefficients.random(vp_time_uniform_sigmas(5)[:-1], seed=3, gamma_max=0.2)
    x0 = _x0(12, seed=5)
    full = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(100, 112))
    part = sample(model, x0[[7, 2]], coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=[107, 102])
    assert torch.equal(part, full[[7, 2]])  # the tree mixture is row-wise: bit-identical (README "Guarantees")
    other = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(200, 212))
    assert (other - full).abs().max() > 1e-6  # the noise is really used


def test_save_load_round_trip(tmp_path, model) -> None:
    coef = AdaSDECoefficients.random(vp_time_uniform_sigmas(4)[:-1], seed=7, gamma_max=0.02, scale_dir=0.1,
                                     meta={"model": "tree2d", "losses": [1.5, 0.25]})
    for name in ("c.json", "c.safetensors"):
        p = coef.save(tmp_path / name)
        back = AdaSDECoefficients.load(p)
        for k in ("r", "c", "a", "gamma"):
            assert torch.equal(back.raw[k], coef.raw[k])
        assert back.config() == coef.config() and back.meta == coef.meta and torch.equal(back.sigmas, coef.sigmas)
        a = sample(model, _x0(6), coef.grid(), solver="adasde", solver_options={"coefficients": str(p)}, seeds=range(6))
        b = sample(model, _x0(6), coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(6))
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="json or .safetensors"):
        coef.save(tmp_path / "c.pkl")
    with pytest.raises(ValueError, match="does not exist"):
        AdaSDECoefficients.load(tmp_path / "missing.json")


def test_erk_guid_pair_on_adasde(model) -> None:
    coef = AdaSDECoefficients.random(vp_time_uniform_sigmas(4)[:-1], seed=2, gamma_max=0.01)
    x0 = _x0(16)
    tr = Trace()
    plain = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(16), callback=tr)
    assert torch.isfinite(tr.rho[:3]).all() and tr.rho[3].isnan().all()  # a pair on every positive step, none on the last
    guided = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(16), w_stiff=1.0)
    assert (guided - plain).abs().max() > 0


# ---------------------------------------------------------------------------- distillation
from erkguid.training import DistillConfig, distill_adasde, dpm2_teacher, student_levels, teacher_levels  # noqa: E402
from erkguid.training.adasde import evaluate_losses  # noqa: E402


def test_teacher_grid_nests_student_grid_and_costs_4_M_plus_1_per_step(model) -> None:
    for nfe, m in ((3, 2), (5, 3), (7, 3)):
        cfg = DistillConfig(nfe=nfe, M=m)
        levels = student_levels(cfg)
        assert levels.numel() == (nfe + 3) // 2
        full, keep = teacher_levels(levels, cfg)
        assert torch.equal(full[keep], levels)
        assert (full[1:] < full[:-1]).all() and full.numel() == 2 * (m + 1) * (levels.numel() - 1) + 1
        calls = [0]

        def counting(x, sigma, calls=calls):
            calls[0] += 1
            return model(x, sigma)

        states = dpm2_teacher(counting, _x0(4), full, keep)
        assert len(states) == levels.numel() and calls[0] == 4 * (m + 1) * (levels.numel() - 1)
    with pytest.raises(ValueError, match="nfe must be a positive odd"):
        student_levels(DistillConfig(nfe=4))


def test_teacher_converges_on_gaussian_data() -> None:
    from erkguid import isotropic_gaussian

    g = isotropic_gaussian(dim=4, std=0.5)
    x = _x0(8).repeat(1, 2)
    levels = student_levels(DistillConfig(nfe=5))
    exact = x * math.sqrt(0.25 + 0.002**2) / math.sqrt(0.25 + 80.0**2)
    errs = []
    for m in (0, 1, 3):
        full, keep = teacher_levels(levels, DistillConfig(nfe=5, M=m))
        errs.append(float((dpm2_teacher(g, x, full, keep)[-1] - exact).abs().max()))
    assert errs[0] > errs[1] > errs[2]


def test_short_distillation_lowers_the_loss_and_resumes_exactly(tmp_path, model) -> None:
    torch.manual_seed(0)
    cfg = DistillConfig(nfe=3, iters=6, batch=32, gamma_max=0.02, lr=0.2)
    before = evaluate_losses(model, AdaSDECoefficients.neutral(student_levels(cfg), gamma_max=0.02), (2,), cfg, num=128)
    full = distill_adasde(model, cfg, progress=False)
    after = evaluate_losses(model, full.coefficients, (2,), cfg, num=128)
    assert sum(after) < 0.5 * sum(before)
    assert len(full.history) == 6 and all(len(h) == 2 for h in full.history)
    assert full.teacher_nfe == 4 * 4 * 2 and full.coefficients.meta["config"]["nfe"] == 3
    assert float(full.coefficients.raw["a"].abs().max()) > 0  # the network-sigma scale gets gradients
    ck = tmp_path / "ck.json"
    part = distill_adasde(model, cfg, checkpoint=ck, stop_at=3, progress=False)
    assert len(part.history) == 3 and ck.is_file()
    resumed = distill_adasde(model, cfg, checkpoint=ck, resume=True, progress=False)
    for k in ("r", "c", "a", "gamma"):
        torch.testing.assert_close(resumed.coefficients.raw[k], full.coefficients.raw[k], rtol=1e-10, atol=1e-12)
    assert resumed.history == full.history
    with pytest.raises(ValueError, match="different settings"):
        distill_adasde(model, DistillConfig(nfe=3, iters=6, batch=16, gamma_max=0.02), checkpoint=ck, resume=True, progress=False)


@pytest.mark.parametrize("coefs", ["none", "afs", "no_afs", "afs_file", "shipped"])
def test_declared_nfe_equals_counted_for_every_option(tmp_path, model, coefs) -> None:
    """Solver.nfe(n, options) equals the evaluations actually made, for every coefficient kind (none = plain
    DPM-Solver-2 without AFS), gamma on/off, denoise_to_zero on/off and ERK-Guid on/off."""
    for n_levels in (3, 4):
        levels = vp_time_uniform_sigmas(n_levels)[:-1]
        for gamma_max in (0.0, 0.01):
            if coefs == "none":
                coef, grid = None, vp_time_uniform_sigmas(n_levels)
            elif coefs == "shipped":
                coef = "shipped:tree2d-nfe5" if gamma_max == 0.0 else AdaSDECoefficients.load("shipped:tree2d-nfe7")
                grid = AdaSDECoefficients.load(coef).grid() if isinstance(coef, str) else coef.grid()
            else:
                obj = AdaSDECoefficients.random(levels, seed=2, gamma_max=gamma_max, afs=coefs != "no_afs")
                coef, grid = obj, obj.grid()
                if coefs == "afs_file":
                    coef = str(tmp_path / f"c{n_levels}{gamma_max}.json")
                    obj.save(coef)
            for dtz in (False, True):
                for w in (0.0, 1.0):
                    opts = {"coefficients": coef, "denoise_to_zero": dtz}
                    tr = Trace()
                    sample(model, _x0(4), grid, solver="adasde", solver_options=opts, seeds=range(4), w_stiff=w, callback=tr,
                           check_divergence=False)  # counts NFE only; w=1 may move far on random coefficients
                    assert tr.nfe == SOLVERS["adasde"].nfe(len(grid) - 1, opts), (coefs, n_levels, gamma_max, dtz, w)
    assert SOLVERS["adasde"].nfe(4) == 6  # default options: DPM-Solver-2 without AFS, 2 per step


def test_official_step0_gamma_option_feeds_adam_a_zero_gradient(model, monkeypatch) -> None:
    """official_step0_gamma=True: gamma's table has a (zero) gradient at step 0, so Adam updates it there too
    (official loop); False (default): it has no gradient at step 0 and Adam skips it. Learned gamma then differs."""
    seen: list[tuple[bool, float]] = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        g = self.param_groups[0]["params"][3]  # r, c, a, gamma
        seen.append((g.grad is not None, 0.0 if g.grad is None else float(g.grad.abs().max())))
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    out = {}
    for official in (False, True):
        seen.clear()
        cfg = DistillConfig(nfe=5, iters=3, batch=16, gamma_max=0.01, official_step0_gamma=official)
        out[official] = distill_adasde(model, cfg, progress=False).coefficients
        per_iter = [seen[k : k + 3] for k in range(0, len(seen), 3)]
        assert len(per_iter) == 3
        for it in per_iter:  # step 0: gamma_0 = 0 is not learned, so its gradient is absent or exactly zero
            assert it[0] == ((True, 0.0) if official else (False, 0.0))
            assert it[1][0] and it[2][0]
    assert DistillConfig().official_step0_gamma is False
    assert not torch.equal(out[True].raw["gamma"], out[False].raw["gamma"])


def test_distill_cli_official_step0_gamma_flag(tmp_path) -> None:
    from click.testing import CliRunner

    from erkguid.cli import main

    out = tmp_path / "c.json"
    r = CliRunner().invoke(main, ["distill", "--model", "tree2d", "--nfe", "3", "--iters", "1", "--batch", "8",
                                  "--official-step0-gamma", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    meta = AdaSDECoefficients.load(out).meta
    assert meta["config"]["official_step0_gamma"] is True and meta["command"].endswith(" --official-step0-gamma")


# ---------------------------------------------------------------------------- the student is an engine run
def _written_out_student(model, coef, x, targets, gen, bptt):
    """AdaSDE's six formulas (module docstring of erkguid.solvers.adasde) written out with autograd, independently
    of the solver and the engine; per step: (loss, d loss / d raw tables)."""
    out = []
    params = coef.parameters()
    for i in range(coef.num_steps):
        s0, s1 = float(coef.sigmas[i]), float(coef.sigmas[i + 1])
        r = torch.sigmoid(coef.raw["r"][i])
        c = 1 + coef.scale_dir * torch.tanh(coef.raw["c"][i] / 2)
        a = 1 + coef.scale_time * torch.tanh(coef.raw["a"][i] / 2)
        if coef.gamma_max > 0 and i > 0:
            gamma = coef.gamma_min + (coef.gamma_max - coef.gamma_min) * torch.sigmoid((coef.raw["gamma"][i] + GAMMA_BIAS) / 2)
            z = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            s_hat = (1 + gamma) * s0
            x_hat = x + torch.sqrt(s_hat**2 - s0**2) * z
        else:
            s_hat, x_hat = torch.tensor(s0, dtype=torch.float64), x
        if coef.afs and i == 0:
            d = x_hat / torch.sqrt(1 + s_hat**2)
        else:
            d = (x_hat - model(x_hat, s_hat.expand(x.shape[0]))) / s_hat
        s = s1**r * s_hat ** (1 - r)
        x_mid = x_hat + (s - s_hat) * d
        d_mid = (x_mid - model(x_mid, (a * s).expand(x.shape[0]))) / s
        x = x_hat + c * (s1 - s_hat) * d_mid
        loss = ((x - targets[i + 1]) ** 2).sum(1).mean()
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out.append((loss.detach(), [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]))
        if not bptt:
            x = x.detach()
    return out


@pytest.mark.parametrize(("afs", "bptt"), [(True, True), (False, True), (True, False)])
def test_student_engine_run_matches_written_out_formulas_with_gradients(model, afs, bptt) -> None:
    """student_losses (an engine run with differentiable coefficients, inflation noise from the iteration's
    generator) gives the losses and the gradients w.r.t. the raw tables of the formulas written out by hand."""
    from erkguid.training.adasde import student_losses

    cfg = DistillConfig(nfe=5 if afs else 6, afs=afs)
    coef = AdaSDECoefficients.random(student_levels(cfg), seed=4, gamma_max=0.05, afs=afs)
    for p in coef.parameters():
        p.requires_grad_(True)
    x = _x0(16)
    tl, keep = teacher_levels(coef.sigmas, cfg)
    targets = dpm2_teacher(model, x, tl, keep)
    got: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def hook(i, loss):
        grads = torch.autograd.grad(loss, coef.parameters(), retain_graph=True, allow_unused=True)
        got.append((loss.detach(), [torch.zeros_like(p) if g is None else g for g, p in zip(grads, coef.parameters())]))

    losses = student_losses(model, coef, x, targets, torch.Generator().manual_seed(9), hook, bptt)
    want = _written_out_student(model, coef, x, targets, torch.Generator().manual_seed(9), bptt)
    assert len(got) == len(want) == len(losses) == coef.num_steps
    for (gl, gg), (wl, wg), lo in zip(got, want, losses):
        assert torch.equal(gl, lo)
        torch.testing.assert_close(gl, wl, rtol=1e-12, atol=0)
        for a, b in zip(gg, wg):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    last = got[-1][1]
    assert float(last[2].abs().sum()) > 0  # the network-sigma scale a is reached only through the denoiser's sigma
    assert (float(last[0][0].abs()) > 0) == bptt  # step 0's r reaches the last loss only through the state


def test_differentiable_run_hooks_are_checked(model) -> None:
    from erkguid import Run

    sig = vp_time_uniform_sigmas(4)
    with pytest.raises(ValueError, match="either seeds or a noise source"):
        Run(model, _x0(4), sig, solver="adasde", seeds=range(4), noise=torch.randn_like)
    with pytest.raises(TypeError, match="noise must be a callable"):
        Run(model, _x0(4), sig, solver="adasde", noise=3)  # type: ignore[arg-type]
    state = Run(model, _x0(4), sig[:3], solver="heun").finish()
    with pytest.raises(ValueError, match="seeds and noise cannot be given when continuing"):
        Run(model, state, sig[2:], solver="heun", noise=torch.randn_like)
    # detach_state: the next step starts from a detached state, the yielded state keeps its graph
    x = _x0(4).requires_grad_(True)
    steps = list(Run(model, x, sig, solver="heun", detach_state=True, check_finite="off"))
    assert steps[0].x.requires_grad and not steps[1].x.requires_grad
    steps = list(Run(model, x, sig, solver="heun", check_finite="off"))
    assert steps[1].x.requires_grad
