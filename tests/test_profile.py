"""`erkguid profile`: per-step rho-hat, gated fractions and correction/step, checked on exact models."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from erkguid import edm_sigmas, isotropic_gaussian, randn_from_seeds, tree_2d
from erkguid.cli import main
from erkguid.experiments.profile import format_summary, profile_run, save_profile


def test_rho_hat_is_the_exact_eigenvalue_on_an_isotropic_gaussian():
    # N(0, s^2 I): f = sigma x / (s^2 + sigma^2) is linear with J = sigma / (s^2 + sigma^2) I, so rho-hat (Eq. 17) is exact
    m = isotropic_gaussian(dim=4, std=0.5)
    x = randn_from_seeds(range(6), (4,), sigma=80.0, dtype=torch.float64)
    res = profile_run(m, x, edm_sigmas(8), w_stiff=0.0, candidates=(0.5, 2.0))
    steps = res["steps"]
    assert steps[0]["rho_q"] is None and steps[-1]["rho_q"] is None  # no pair at the first step; last step never corrected
    for s in steps[1:-1]:
        lam = s["sigma"] / (0.25 + s["sigma"] ** 2)
        assert s["rho_q"] == pytest.approx([lam] * 3, rel=1e-6)
        assert s["gated"] == {0.5: float(lam > 0.5), 2.0: float(lam > 2.0)}
        assert s["rel_corr_q"] == [0.0, 0.0, 0.0]  # w_stiff = 0: nothing applied
        assert s["step_norm_q"][0] > 0


def test_gated_fraction_and_correction_size_on_the_tree(tmp_path):
    m = tree_2d()
    x = randn_from_seeds(range(32), (2,), sigma=80.0, dtype=torch.float64)
    res = profile_run(m, x, edm_sigmas(10), w_stiff=1.0, w_con=0.0, candidates=(0.0, 1.0, 1e9))
    rows = [s for s in res["steps"] if s["gated"] is not None]
    assert all(s["gated"][1e9] == 0.0 and s["gated"][0.0] == 1.0 for s in rows)
    assert any(0.0 < s["gated"][1.0] <= 1.0 for s in rows)
    assert max(s["rel_corr_q"][2] for s in rows) > 0
    # gating the run at a huge w_con leaves nothing applied
    off = profile_run(m, x, edm_sigmas(10), w_stiff=1.0, w_con=1e9, candidates=(1.0,))
    assert all(s["rel_corr_q"] == [0.0, 0.0, 0.0] for s in off["steps"] if s["gated"] is not None)
    files = save_profile(res, tmp_path)
    assert len(files) == 3 and json.loads((tmp_path / "profile.json").read_text())["num_samples"] == 32
    assert format_summary(res).count("\n") == len(res["steps"]) + 3


def test_profile_bad_candidates_and_cli(tmp_path):
    m = isotropic_gaussian(dim=2)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="candidates"):
        profile_run(m, x, edm_sigmas(4), candidates=(-1.0,))
    args = ["profile", "--model", "gauss", "--steps", "6", "--num-samples", "8", "--quiet", "--out", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "gated w_con=0.5" in r.output and (tmp_path / "profile.png").stat().st_size > 1000
    bad = CliRunner().invoke(main, ["profile", "--solver", "nope", "--num-samples", "4", "--quiet", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "solver must be one of" in bad.output
    bad = CliRunner().invoke(main, ["profile", "--candidates", "a,b", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "--candidates" in bad.output
