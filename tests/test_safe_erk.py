"""Safe ERK-Guid: the bounded variants, erkguid.recommended and the evidence behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from erkguid import ErkPair, erk_guid, recommended, sample
from erkguid.correction import scale_z
from erkguid.experiments.safe import Variant, format_markdown, random_mixture, run_safe, select_recommended
from erkguid.metrics import global_error, ratio_ci
from erkguid.noise import randn_from_seeds
from erkguid.recommend import RECOMMENDED
from erkguid.reference import reference_solve
from erkguid.schedules import edm_sigmas
from erkguid.solvers import get_solver

EVIDENCE = Path(__file__).resolve().parents[1] / "docs" / "safe" / "safe_erk.json"


def _pair(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, ErkPair]:
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(b, d, generator=g, dtype=torch.float64)  # noqa: E731
    x, xa = r(), r() * 0.01
    return r(), ErkPair(x, r() * 50, x + xa, r() * 50, 0.7)


def test_trust_bounds_every_samples_correction_and_none_is_the_paper_formula() -> None:
    x_next, pair = _pair()
    paper = erk_guid(x_next, pair, 3.0, 0.0)
    assert torch.equal(erk_guid(x_next, pair, 3.0, 0.0, "z2", None).x, paper.x)  # trust=None: bit for bit
    ndx = (pair.x - pair.x_alt).flatten(1).norm(dim=1)
    for kappa in (0.1, 0.5, 2.0):
        c = erk_guid(x_next, pair, 3.0, 0.0, "z2", kappa)
        moved = (c.x - x_next).flatten(1).norm(dim=1)
        assert (moved <= kappa * ndx * (1 + 1e-12)).all()
        assert torch.allclose(c.norm, torch.minimum(paper.norm, kappa * ndx))
        # the bound only shortens the correction; its direction stays v
        d_paper, d = paper.x - x_next, c.x - x_next
        cos = (d_paper * d).sum(1) / (d_paper.norm(dim=1) * d.norm(dim=1))
        torch.testing.assert_close(cos, torch.ones_like(cos))


def test_sat_scaling_is_z2_for_small_z_and_saturates_at_one() -> None:
    z = torch.logspace(-4, 4, 50, dtype=torch.float64)
    s = scale_z(z, "sat")
    assert (s < 1).all() and (s > 0).all()
    rel = (z * z - s) / (z * z)
    assert (rel >= 0).all() and (rel[:20] <= (z * z)[:20] * (1 + 1e-9)).all()  # = z^2 (1 - z^2 + ...) for small z
    assert float(s[-1]) == pytest.approx(1.0, abs=1e-8)


def test_recommended_is_the_rule_applied_to_the_committed_evidence() -> None:
    res = json.loads(EVIDENCE.read_text())
    assert select_recommended(res["rows"]) == RECOMMENDED
    # the published tables are the command's formatting of that JSON, nothing edited by hand
    assert (EVIDENCE.parent / "safe_erk.md").read_text() == format_markdown(res)


def test_a_committed_evidence_cell_reproduces() -> None:
    res = json.loads(EVIDENCE.read_text())
    kw = recommended("heun", 7)
    v = Variant("rec", kw["w_stiff"], kw["w_con"], kw["scaling"], kw["trust"])
    new = run_safe(["mix8-stiff"], solvers=("heun",), nfes=(7,), num_samples=256, variants=lambda s: [v], progress=False)
    old = {r["variant"]: r for r in res["rows"] if (r["problem"], r["solver"], r["nfe"]) == ("mix8-stiff", "heun", 7)}
    rec = next(r for r in old.values() if r["variant"] != "plain" and
               (r["w_stiff"], r["w_con"], r["scaling"], r["trust"]) == (v.w_stiff, v.w_con, v.scaling, v.trust))
    # float64 throughout: only rounding may differ between machines
    assert new["rows"][0]["err_mean"] == pytest.approx(old["plain"]["err_mean"], rel=1e-9)
    assert new["rows"][1]["err_mean"] == pytest.approx(rec["err_mean"], rel=1e-9)


@pytest.mark.parametrize("solver,nfe", [("heun", 7), ("heun", 15), ("dpm2", 7), ("dpm2", 11)])
def test_recommended_is_not_worse_on_a_mixture_it_never_saw(solver: str, nfe: int) -> None:
    m = random_mixture(4, 6, 3e-4, 0.5, 21, "unseen4")
    x0 = randn_from_seeds(range(128), m.shape, sigma=80.0, dtype=torch.float64)
    ref = reference_solve(m, x0, 80.0, rtol=1e-7, atol=1e-8).x
    steps = max(n for n in range(1, nfe + 1) if get_solver(solver).nfe(n) <= nfe)
    grid = edm_sigmas(steps)
    e0 = global_error(sample(m, x0, grid, solver=solver), ref)
    kw = recommended(solver, nfe)
    assert kw["w_stiff"] > 0
    e = global_error(sample(m, x0, grid, solver=solver, **kw), ref)
    ratio, lo, hi = ratio_ci(e, e0)
    assert lo <= 1.0, f"{solver} at NFE {nfe}: recommended/plain {ratio:.3f} [{lo:.3f}, {hi:.3f}]"


def test_recommended_is_off_where_no_setting_was_safe_and_checks_its_arguments() -> None:
    off = {"w_stiff": 0.0, "w_con": 0.0, "scaling": "z2", "trust": None}
    for s in ("dpmpp_2m", "deis", "ipndm", "unipc", "euler"):
        assert recommended(s) == off and recommended(s, 11) == off
    assert recommended("dpm2") == off  # no DPM-Solver-2 setting was safe at every NFE: pass the run's NFE
    assert recommended("heun", 31)["scaling"] == "sat"
    r = recommended("heun")
    r["w_stiff"] = 99.0  # a copy: the table is not mutated
    assert recommended("heun")["w_stiff"] == 2.0
    with pytest.raises(ValueError, match="solver must be one of"):
        recommended("nosuch")
    with pytest.raises(ValueError, match="nfe"):
        recommended("heun", True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trust"):
        sample(lambda x, s: x, torch.zeros(2, 2), edm_sigmas(4), w_stiff=1.0, trust=-1.0)
