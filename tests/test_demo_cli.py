"""`erkguid demo`'s thread setting and the reference solve's progress bar."""

import torch
from click.testing import CliRunner

import erkguid.experiments.demo as demo_mod
from erkguid.cli import main
from erkguid.models import GaussianMixture
from erkguid.reference import check_reference, reference_solve


def _mixture() -> GaussianMixture:
    covs = torch.stack([0.05 * torch.eye(2), torch.tensor([[0.2, 0.05], [0.05, 0.1]])]).double()
    return GaussianMixture([0.3, 0.7], torch.tensor([[-1.0, 0.0], [1.0, 0.5]]).double(), covs)


def test_reference_progress_bar_is_shown_reaches_the_end_and_changes_nothing(capsys):
    m = _mixture()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    quiet = reference_solve(m, x, 80.0, rtol=1e-6)
    assert capsys.readouterr().err == ""  # off by default in the library
    shown = reference_solve(m, x, 80.0, rtol=1e-6, progress="my reference")
    err = capsys.readouterr().err
    assert "my reference" in err and "100%" in err and "18.20/18.20 log-sigma" in err  # log(80) - log(1e-6)
    assert torch.equal(shown.x, quiet.x) and torch.equal(shown.nfe, quiet.nfe)
    _, gap = check_reference(m, x, 80.0, rtol=1e-5, progress=True)
    err = capsys.readouterr().err
    assert "reference rtol 1e-05" in err and "reference rtol 1e-07" in err and gap < 1e-3


def test_demo_runs_with_the_requested_threads_and_restores_the_callers(tmp_path, monkeypatch):
    seen = []
    real = demo_mod.run_demo

    def spy(*a, **kw):
        seen.append((torch.get_num_threads(), kw["progress"]))
        if len(seen) > 1:
            raise RuntimeError("interrupted")
        return real(*a, **kw)

    monkeypatch.setattr(demo_mod, "run_demo", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = CliRunner().invoke(main, ["demo", "--num-samples", "16", "--quiet", "--out", str(tmp_path)])
        assert r.exit_code == 0, r.output
        assert seen == [(1, False)] and torch.get_num_threads() == 2  # default 1 thread, caller's setting restored
        assert "s with 1 torch thread (reference solves" in r.output
        r = CliRunner().invoke(main, ["demo", "--threads", "3", "--out", str(tmp_path)])
        assert isinstance(r.exception, RuntimeError)  # restored even when the run fails
        assert seen[-1] == (3, True) and torch.get_num_threads() == 2
        bad = CliRunner().invoke(main, ["demo", "--threads", "0"])
        assert bad.exit_code == 2 and "--threads" in bad.output
    finally:
        torch.set_num_threads(before)
