"""`erkguid tune`: exact NFE budget, disjoint seeds, presets that replay the reported held-out error exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erkguid import edm_sigmas, get_solver, load_preset, randn_from_seeds, reference_solve, sample
from erkguid.cli import main
from erkguid.metrics import global_error
from erkguid.resolve import resolve_model
from erkguid.tune import (
    CountingDenoiser,
    TuneConfig,
    conditioning,
    fit_grid,
    read_preset,
    save_preset,
    solver_nfe,
    steps_for_nfe,
    tune,
)

SOLVERS4 = ("euler", "heun", "ipndm", "dpmpp_2m")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    cfg = TuneConfig(nfe=5, calib=12, heldout=10, budget_minutes=0.25, rtol=1e-5, erk_top=1, fit_top=1, fit_evals=12,
                     solvers=SOLVERS4)
    res = tune("tree2d", 5, cfg, progress=False)
    path = save_preset(res, tmp_path_factory.mktemp("tune") / "p.json")
    return res, path


def test_preset_replays_the_reported_heldout_error_exactly_at_the_budget(tuned) -> None:
    res, path = tuned
    kw = load_preset(path)
    keys = {"sigmas", "solver", "solver_options", "w_stiff", "w_con", "scaling"}
    assert set(kw) == keys | ({"trust"} if "trust" in res else set())
    assert kw["sigmas"].tolist() == res["sigmas"] and kw["solver"] == res["solver"]
    m = resolve_model(res["model"])
    seeds = range(*res["heldout"]["seeds"])
    x0 = randn_from_seeds(seeds, m.shape, sigma=float(kw["sigmas"][0]), dtype=torch.float64)
    extra = conditioning(m, seeds)
    h = res["heldout"]
    ref = reference_solve(m.denoiser, x0, m.sigma_max, rtol=h["reference_rtol"], atol=h["reference_atol"], **extra).x
    counted = CountingDenoiser(m.denoiser)
    err = global_error(sample(counted, x0, **kw, **extra), ref)
    assert res["sigmas"][0] == m.sigma_max
    assert float(err.mean()) == res["heldout"]["err_mean"]  # bit-exact replay
    assert counted.calls == 5 == res["nfe"] == res["heldout"]["nfe_counted"]
    assert solver_nfe(get_solver(kw["solver"]), len(res["sigmas"]) - 1, kw["solver_options"]) == 5
    # the ratio and its interval are the paired bootstrap vs the named best peer on the same held-out seeds
    best = min(h["peers"], key=lambda p: p["err_mean"])
    assert h["best_peer"] == best["label"] and h["ratio_vs_best_peer"] == pytest.approx(h["err_mean"] / best["err_mean"])
    assert h["ratio_ci95"][0] <= h["ratio_vs_best_peer"] <= h["ratio_ci95"][1]
    assert all(p["nfe"] == 5 for p in h["peers"]) and {p["grid"] for p in h["peers"]} == {"edm-rho7", "logsnr"}


def test_calibration_and_heldout_seeds_are_disjoint_and_the_search_is_recorded(tuned) -> None:
    res, _ = tuned
    cal, held = range(*res["chosen"]["calibration_seeds"]), range(*res["heldout"]["seeds"])
    assert len(cal) == 12 and len(held) == 10 and not set(cal) & set(held)
    # heun spends 2n - 1 NFE: 5 = 3 steps; every searched solver hits the budget exactly or is skipped with a note
    assert res["chosen"]["calibration_err_mean"] <= min(p["err_mean"] for p in res["heldout"]["peers"]) * 10
    assert math.isfinite(res["heldout"]["err_mean"]) and res["solver"] in SOLVERS4


def test_solvers_that_cannot_hit_the_budget_are_skipped_by_name() -> None:
    heun = get_solver("heun")
    assert steps_for_nfe(heun, 7, {}) == 4 and steps_for_nfe(heun, 6, {}) is None
    res = tune("gauss", 6, TuneConfig(nfe=6, calib=8, heldout=8, budget_minutes=0.02, rtol=1e-4, fit_top=0, erk_top=0,
                                       solvers=("heun", "euler")), progress=False)
    assert res["solver"] == "euler" and len(res["sigmas"]) == 7
    assert any(n.startswith("heun: no step count spends exactly 6 NFE") for n in res["chosen"]["notes"])
    with pytest.raises(ValueError, match="no registered solver spends exactly 6 NFE"):
        tune("gauss", 6, TuneConfig(nfe=6, calib=8, heldout=8, solvers=("heun",)), progress=False)


def test_fit_grid_descends_keeps_sigma_max_and_a_valid_grid() -> None:
    target = [80.0, 5.0, 0.3, 0.01, 0.0]

    def score(s: list[float]) -> float:
        return sum((math.log(a) - math.log(b)) ** 2 for a, b in zip(s[:-1], target[:-1]))

    start = [80.0, 20.0, 2.0, 0.002, 0.0]
    grid, best = fit_grid(score, start, deadline=float("inf"), max_evals=400, min_step=1e-3)
    assert grid[0] == 80.0 and grid[-1] == 0.0 and all(a > b for a, b in zip(grid, grid[1:]))
    assert best < 1e-4 < score(start) and best == pytest.approx(score(grid))


def test_preset_nfe_and_pickle_rules(tuned, tmp_path: Path) -> None:
    res, path = tuned
    with pytest.raises(ValueError, match="tuned for NFE 5, not 7"):
        load_preset(path, nfe=7)
    bad = dict(res, nfe=6)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="spends 5 NFE, not the recorded 6"):
        read_preset(tmp_path / "bad.json")
    edm = dict(res, model="edm:/nowhere/net.pkl::/nowhere")
    (tmp_path / "edm.json").write_text(json.dumps(edm))
    r = CliRunner().invoke(main, ["sample", "--preset", str(tmp_path / "edm.json"), "--out", str(tmp_path / "x.npz")])
    assert r.exit_code != 0 and "--allow-pickle" in r.output  # a preset never opts in to unpickling


def test_tune_cli_writes_preset_table_plot_and_sample_uses_it(tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    r = CliRunner().invoke(main, ["tune", "--model", "gauss", "--nfe", "4", "--calib", "8", "--heldout", "8",
                                  "--budget-minutes", "0.02", "--solvers", "euler,ipndm", "--curve-nfes", "3,4",
                                  "--rtol", "1e-4", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "held-out ratio vs best plain peer" in r.output
    assert (tmp_path / "g.report.md").exists() and (tmp_path / "g.report.png").exists()
    res = json.loads(out.read_text())
    assert {c["nfe"] for c in res["curve"]} == {3, 4}
    s = CliRunner().invoke(main, ["sample", "--preset", str(out), "--num-samples", "4", "--quiet",
                                  "--out", str(tmp_path / "s.npz")])
    assert s.exit_code == 0, s.output
    with np.load(tmp_path / "s.npz") as z:
        assert z["samples"].shape == (4, 16)
    h = res["heldout"]
    shown = f"{h['ratio_vs_best_peer']:.3f} [{h['ratio_ci95'][0]:.3f}, {h['ratio_ci95'][1]:.3f}]"
    assert shown in (tmp_path / "g.report.md").read_text()


def test_a_grid_given_as_a_python_list_keeps_float64() -> None:
    from erkguid import check_sigmas

    assert check_sigmas([80.0, 0.1, 0.0])[1].item() == 0.1  # not float32's 0.10000000149


def test_sample_cli_takes_solver_options_and_adasde_coefficient_files(tmp_path: Path) -> None:
    from erkguid.generate import class_for_seed, solver_seed
    from erkguid.solvers import AdaSDECoefficients

    m = resolve_model("tree2d")
    coef = AdaSDECoefficients.load("shipped:tree2d-nfe3")
    path = coef.save(tmp_path / "c.json")
    cases = ((["--adasde-coefficients", str(path)], coef.grid(), "adasde", {"coefficients": coef}),
             (["--solver", "deis", "--solver-options", '{"order": 2}', "--steps", "5"], None, "deis", {"order": 2}))
    for args, grid, solver, opts in cases:
        out = tmp_path / f"{solver}.npz"
        r = CliRunner().invoke(main, ["sample", "--model", "tree2d", *args, "--num-samples", "3", "--dtype", "float64", "--quiet",
                                      "--out", str(out)])
        assert r.exit_code == 0, r.output
        grid = grid if grid is not None else edm_sigmas(5)
        x0 = randn_from_seeds(range(3), (2,), sigma=float(grid[0]), dtype=torch.float64)
        want = sample(m.denoiser, x0, grid, solver=solver, solver_options=opts, seeds=[solver_seed(q) for q in range(3)],
                      class_labels=torch.tensor([class_for_seed(q, 2) for q in range(3)]))
        with np.load(out) as z:
            np.testing.assert_array_equal(z["samples"], want.numpy())
    r = CliRunner().invoke(main, ["sample", "--model", "tree2d", "--solver-options", "{bad", "--out", str(tmp_path / "e.npz")])
    assert r.exit_code != 0 and "--solver-options" in r.output and "not JSON" in r.output


def test_distilled_adasde_is_a_candidate_and_coefficients_travel_inline() -> None:
    from erkguid.solvers import AdaSDECoefficients
    from erkguid.tune import _jsonable_options, options_from_json

    cfg = TuneConfig(nfe=5, calib=8, heldout=8, budget_minutes=0.02, rtol=1e-4, fit_top=0, erk_top=0, solvers=("euler",))
    plain = tune("gauss", 5, cfg, progress=False)
    res = tune("gauss", 5, TuneConfig(**{**cfg.__dict__, "distill_iters": 1}), progress=False)
    assert res["chosen"]["candidates_scored"] == plain["chosen"]["candidates_scored"] + 1  # + the distilled AdaSDE
    coef = AdaSDECoefficients.load("shipped:tree2d-nfe5")
    stored = json.loads(json.dumps(_jsonable_options({"coefficients": coef})))  # what a preset holds: JSON, no path
    back = options_from_json(stored)["coefficients"]
    assert all(torch.equal(back.raw[k], coef.raw[k]) for k in coef.raw) and torch.equal(back.sigmas, coef.sigmas)
    m = resolve_model("tree2d")
    x0 = randn_from_seeds(range(4), m.shape, sigma=float(coef.sigmas[0]), dtype=torch.float64)
    a = sample(m.denoiser, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef}, seeds=range(4))
    b = sample(m.denoiser, x0, coef.grid(), solver="adasde", solver_options={"coefficients": back}, seeds=range(4))
    assert torch.equal(a, b)


def test_generate_preset_writes_what_sample_preset_gives(tuned, tmp_path: Path) -> None:
    from erkguid import generate as gen

    res, path = tuned
    r = CliRunner().invoke(main, ["generate", "--preset", str(path), "--seeds", "0-2", "--out", str(tmp_path / "g"), "--quiet"])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "g" / gen.METADATA).read_text())
    assert meta["sigmas"] == res["sigmas"] and meta["settings"]["solver"] == res["solver"]
    s = CliRunner().invoke(main, ["sample", "--preset", str(path), "--num-samples", "3", "--quiet",
                                  "--out", str(tmp_path / "s.npz")])
    assert s.exit_code == 0, s.output
    with np.load(tmp_path / "s.npz") as z:
        for q in range(3):
            with np.load(gen.seed_path(tmp_path / "g", q, "npz")) as f:
                np.testing.assert_array_equal(f["x"], z["samples"][q])


def test_erk_search_tries_the_recommended_setting_and_trust_bounds(monkeypatch) -> None:
    from erkguid import recommended
    from erkguid.tune import ERK_GRID, TRUST_GRID, Evaluator

    seen = []
    score = Evaluator.score

    def record(self, cand):
        seen.append(cand)
        return score(self, cand)

    monkeypatch.setattr(Evaluator, "score", record)
    cfg = TuneConfig(nfe=5, calib=8, heldout=8, budget_minutes=5.0, rtol=1e-4, fit_top=0, erk_top=1, solvers=("heun",))
    res = tune("tree2d", 5, cfg, progress=False)
    rec = recommended("heun", 5)
    assert rec["w_stiff"] > 0 and rec["trust"] is not None
    erk = [c for c in seen if c.w_stiff > 0]
    assert any({"w_stiff": c.w_stiff, "w_con": c.w_con, "scaling": c.scaling, "trust": c.trust} == rec for c in erk)
    grid = {(c.w_stiff, c.w_con, c.scaling) for c in erk if c.trust is None}
    assert grid == set(ERK_GRID) and {"sat", "abs", "z2"} == {s for _, _, s in grid}
    trusted = {c.trust for c in erk if c.trust is not None}
    assert set(TRUST_GRID) <= trusted | {rec["trust"]}
    # the preset stores trust exactly when the winner has one
    assert ("trust" in res) == ("trust=" in res["chosen"]["label"])


def test_a_preset_trust_is_stored_loaded_and_used_by_sample_and_generate(tuned, tmp_path: Path) -> None:
    from erkguid import generate as gen
    from erkguid.generate import class_for_seed, solver_seed

    res, _ = tuned
    path = tmp_path / "t.json"
    save_preset({**res, "w_stiff": 2.0, "w_con": 0.0, "scaling": "z2", "trust": 0.01}, path)
    kw = load_preset(path)
    assert kw["trust"] == 0.01 and kw["w_stiff"] == 2.0
    m = resolve_model(res["model"])
    x0 = randn_from_seeds(range(3), m.shape, sigma=float(kw["sigmas"][0]), dtype=torch.float64)
    labels = torch.tensor([class_for_seed(q, 2) for q in range(3)])
    extra = {"seeds": [solver_seed(q) for q in range(3)], "extra_args": {"class_labels": labels}}
    want = sample(m.denoiser, x0, **kw, **extra)
    unbounded = sample(m.denoiser, x0, **{**kw, "trust": None}, **extra, check_divergence=False)  # w=2 unbounded may diverge
    assert not torch.equal(want, unbounded)  # the bound is active
    r = CliRunner().invoke(main, ["sample", "--preset", str(path), "--num-samples", "3", "--dtype", "float64", "--quiet",
                                  "--out", str(tmp_path / "s.npz")])
    assert r.exit_code == 0, r.output
    assert "trust 0.01" in r.output
    with np.load(tmp_path / "s.npz") as z:
        np.testing.assert_array_equal(z["samples"], want.numpy())
    g = CliRunner().invoke(main, ["generate", "--preset", str(path), "--seeds", "0-2", "--dtype", "float64", "--format", "npz",
                                  "--out", str(tmp_path / "g"), "--quiet"])
    assert g.exit_code == 0, g.output
    assert json.loads((tmp_path / "g" / gen.METADATA).read_text())["settings"]["trust"] == 0.01
    for q in range(3):
        with np.load(gen.seed_path(tmp_path / "g", q, "npz")) as f:
            np.testing.assert_array_equal(f["x"], want[q].numpy())
    # --trust overrides the preset's; a bad trust in a preset is refused by name
    o = CliRunner().invoke(main, ["sample", "--preset", str(path), "--trust", "0.5", "--num-samples", "3", "--dtype", "float64",
                                  "--quiet", "--out", str(tmp_path / "o.npz")])
    assert o.exit_code == 0 and "trust 0.5" in o.output
    save_preset({**res, "trust": -1.0}, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="trust must be null or a finite number > 0"):
        load_preset(tmp_path / "bad.json")


def test_every_registered_solver_is_searched_at_its_exact_nfe() -> None:
    from erkguid import SOLVERS
    from erkguid.tune import _plain_candidates

    m = resolve_model("gauss")
    notes: list[str] = []
    cands = _plain_candidates(m, 7, None, notes, grids=("logsnr",))
    assert {c.solver for c in cands} == set(SOLVERS) - {"adasde"} and any(n.startswith("adasde:") for n in notes)
    assert {"dpmpp_3m", "lms", "unipc", "deis"} <= {c.solver for c in cands}
    x0 = randn_from_seeds(range(3), m.shape, sigma=m.sigma_max, dtype=torch.float64)
    for c in cands:
        counted = CountingDenoiser(m.denoiser)
        sample(counted, x0, **c.kwargs())
        assert counted.calls == 7 == get_solver(c.solver).nfe(len(c.sigmas) - 1, c.solver_options), c.label


def test_distribution_objective_with_reference_data(tmp_path: Path) -> None:
    """With reference data the search minimises sliced W2 to it, and the held-out report puts that metric (winner vs
    the best plain peer by it, paired bootstrap interval) beside the error against the model's own ODE."""
    from erkguid import tree_2d
    from erkguid.metrics import sliced_wasserstein

    truth = tree_2d().sample(64, seed=5, dtype=torch.float64)
    cfg = TuneConfig(nfe=5, calib=16, heldout=16, budget_minutes=0.05, rtol=1e-5, fit_top=0, erk_top=0,
                     solvers=("euler", "dpmpp_2m"), reference=truth)
    res = tune("tree2d", 5, cfg, progress=False)
    assert res["chosen"]["objective"] == "sliced W2 to the user's reference data"
    dist = res["heldout"]["distribution"]
    lo, hi = dist["ratio_ci95"]
    assert lo <= dist["ratio_vs_best_peer"] <= hi and dist["reference_samples"] == 64
    # the reported value is the winner's held-out sliced W2, recomputed independently from the preset
    path = save_preset(res, tmp_path / "d.json")
    kw = load_preset(path)
    m = resolve_model("tree2d")
    x0 = randn_from_seeds(range(*res["heldout"]["seeds"]), m.shape, sigma=float(kw["sigmas"][0]), dtype=torch.float64)
    labels = torch.tensor([gen_class(q) for q in range(*res["heldout"]["seeds"])])
    x = sample(m.denoiser, x0, **kw, extra_args={"class_labels": labels} if m.num_classes else None)
    assert dist["winner"] == pytest.approx(sliced_wasserstein(x.reshape(16, -1), truth.reshape(64, -1)), rel=1e-9)
    # the file form: named errors for a wrong shape; no pickle ever read
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 3)))
    r = CliRunner().invoke(main, ["tune", "--model", "tree2d", "--nfe", "5", "--reference-data", str(tmp_path / "bad.npz"),
                                  "--quiet"])
    assert r.exit_code == 2 and "--reference-data" in r.output and "bad.npz" in r.output


def gen_class(q: int) -> int:
    from erkguid.generate import class_for_seed

    return class_for_seed(q, 2)


def test_a_preset_drives_the_k_diffusion_functions(tuned) -> None:
    """`sample_erk(model, x, kw["sigmas"], solver=..., **rest)` runs a tuned preset exactly as erkguid.sample does."""
    from erkguid.integrations import k_diffusion as kd

    _, path = tuned
    kw = load_preset(path)
    m = resolve_model("tree2d")
    x0 = randn_from_seeds(range(4), m.shape, sigma=float(kw["sigmas"][0]), dtype=torch.float64)
    labels = {"class_labels": torch.tensor([0, 1, 0, 1])}
    want = sample(m.denoiser, x0, **kw, extra_args=labels)
    rest = {k: v for k, v in kw.items() if k != "sigmas"}
    got = kd.sample_erk(m.denoiser, x0, kw["sigmas"], extra_args=labels, disable=True, **rest)
    assert torch.equal(got, want)
