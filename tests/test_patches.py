"""Low-rank-plus-isotropic mixtures (Woodbury denoiser, log-density, basis-independent sampling) and the
shipped photograph-patch models."""

import json
from importlib import resources

import numpy as np
import pytest
import torch

from erkguid.models import GaussianMixture, LowRankMixture, get_model, patch_mixture
from erkguid.models.builtin import PATCH_FILES


def _random_model(k=4, d=24, r=5, labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LowRankMixture(torch.rand(k, generator=g) + 0.1, torch.randn(k, d, generator=g),
                          torch.randn(k, d, r, generator=g, dtype=torch.float64) * 0.5,
                          torch.rand(k, generator=g, dtype=torch.float64) * 0.05 + 0.01, labels=labels, shape=(1, 4, d // 4))


def _orthogonal(r, seed):
    q, _ = torch.linalg.qr(torch.randn(r, r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


SIGMAS = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0, 3.0, 10.0, 80.0], dtype=torch.float64)


def test_woodbury_denoiser_and_log_prob_equal_the_dense_mixture():
    m = _random_model(labels=[0, 1, 1, 0])
    dense = m.to_dense()
    assert isinstance(dense, GaussianMixture)
    x = torch.randn(8, 1, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    x[:2] = m.means[:2].reshape(2, 1, 4, 6) + 1e-3 * x[:2]  # near a mean, where the posterior is sharp
    torch.testing.assert_close(m(x, SIGMAS), dense(x, SIGMAS), rtol=0, atol=1e-10)
    torch.testing.assert_close(m.denoise(x, 0.3), dense.denoise(x, 0.3), rtol=0, atol=1e-10)
    lab = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    torch.testing.assert_close(m(x, SIGMAS, class_labels=lab), dense(x, SIGMAS, class_labels=lab), rtol=0, atol=1e-10)
    for s in (0.0, SIGMAS):
        torch.testing.assert_close(m.log_prob(x, s), dense.log_prob(x, s), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(m.log_prob(x, SIGMAS, lab), dense.log_prob(x, SIGMAS, lab), rtol=1e-12, atol=1e-10)
    assert m.sigma_data == pytest.approx(dense.sigma_data, rel=1e-12)
    torch.testing.assert_close(m.score(x, SIGMAS), dense.score(x, SIGMAS), rtol=1e-9, atol=1e-9)
    # float32 states: float32 matrix products, float64 distances and logits
    torch.testing.assert_close(m(x.float(), SIGMAS.float()), dense(x, SIGMAS).float(), rtol=0, atol=2e-5)


def test_denoiser_is_per_sample_and_rejects_bad_input():
    m = _random_model()
    x = torch.randn(8, 24, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched = m(x, SIGMAS)
    singles = torch.cat([m(x[i : i + 1], SIGMAS[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(batched, singles, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="x must have shape"):
        m(torch.zeros(2, 23), 1.0)
    with pytest.raises(ValueError, match="class_labels given but this mixture has no component labels"):
        m(x, 1.0, class_labels=torch.zeros(8))
    with pytest.raises(ValueError, match="class_labels given but this mixture has no component labels"):
        m.sample(4, class_labels=torch.zeros(4))
    labelled = _random_model(labels=[0, 1, 1, 0])
    x1 = labelled.sample(2000, seed=3, class_labels=torch.ones(2000, dtype=torch.long), dtype=torch.float64).reshape(2000, -1)
    w = labelled.weights[1:3] / labelled.weights[1:3].sum()  # class 1 = components 1 and 2
    expect = (w[:, None] * labelled.means[1:3]).sum(0)
    se = (x1.var(0) / 2000).sqrt()
    assert ((x1.mean(0) - expect).abs() < 5 * se).all()
    with pytest.raises(ValueError, match="floor must be a positive"):
        LowRankMixture([1.0], torch.zeros(1, 4), torch.ones(1, 4, 2), 0.0)
    with pytest.raises(ValueError, match="factors must be"):
        LowRankMixture([1.0], torch.zeros(1, 4), torch.ones(1, 4, 5), 0.1)


def test_sampling_moments_match_the_mixture():
    m = _random_model(k=3, d=8, r=2, seed=3)
    x = m.sample(200_000, seed=0, dtype=torch.float64).reshape(-1, 8)
    mean = (m.weights[:, None] * m.means).sum(0)
    covs = m.covariances()
    second = (m.weights[:, None, None] * (covs + m.means[:, :, None] * m.means[:, None, :])).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    se_mean = (cov.diagonal() / len(x)).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se_mean).all()
    emp = torch.cov(x.T)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / len(x)).sqrt()  # Gaussian approximation
    assert ((emp - cov).abs() < 6 * se_cov).all()


def test_sampling_depends_on_the_covariance_not_on_its_factor():
    m = _random_model(seed=4)
    rotated = LowRankMixture(m.weights, m.means, torch.einsum("kdr,rs->kds", m.factors, _orthogonal(5, 9)), m.floor,
                             shape=m.shape)
    permuted = LowRankMixture(m.weights, m.means, m.factors.flip(2), m.floor, shape=m.shape)
    torch.testing.assert_close(rotated.covariances(), m.covariances(), rtol=0, atol=1e-12)
    a = m.sample(64, seed=7, dtype=torch.float64)
    torch.testing.assert_close(rotated.sample(64, seed=7, dtype=torch.float64), a, rtol=0, atol=1e-12)
    torch.testing.assert_close(permuted.sample(64, seed=7, dtype=torch.float64), a, rtol=0, atol=1e-12)
    # a repeated eigenvalue: any basis of that eigenspace gives the same samples
    u, _ = torch.linalg.qr(torch.randn(1, 12, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    iso = LowRankMixture([1.0], torch.zeros(1, 12), 0.7 * u, 0.01)
    iso_rot = LowRankMixture([1.0], torch.zeros(1, 12), 0.7 * u @ _orthogonal(4, 6), 0.01)
    torch.testing.assert_close(iso_rot.sample(32, seed=1, dtype=torch.float64), iso.sample(32, seed=1, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_single_component_ode_solution_matches_a_reference_solve():
    from erkguid import reference_solve

    m = LowRankMixture([1.0], torch.randn(1, 12, dtype=torch.float64), 0.6 * torch.randn(1, 12, 3, dtype=torch.float64), 0.02)
    x0 = 80.0 * torch.randn(4, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = m.ode_solution(x0, 80.0, 0.0)
    ref = reference_solve(m, x0, 80.0, rtol=1e-10, atol=1e-11).x
    torch.testing.assert_close(ref, exact, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,side,rank", [("patches16", 16, 32), ("patches32", 32, 48)])
def test_shipped_patch_mixture_has_the_documented_shapes(name, side, rank):
    if not resources.files("erkguid.data").joinpath(PATCH_FILES[name]).is_file():
        pytest.fail(f"{PATCH_FILES[name]} is not shipped")
    m = get_model(name)
    assert isinstance(m, LowRankMixture) and m is not patch_mixture(name)
    assert (m.num_components, m.dim, m.rank, m.shape) == (32, side * side, rank, (1, side, side))
    assert (m.floor >= 1e-4 * (1 - 1e-6)).all() and float(m.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert 0.3 < m.sigma_data < 0.8  # grey levels in [-1, 1]
    with resources.files("erkguid.data").joinpath(PATCH_FILES[name]).open("rb") as fh:
        info = json.loads(str(np.load(fh, allow_pickle=False)["info"]))
    assert info["rank"] == rank and info["patch_size"] == side and info["components"] == 32
    doc = resources.files("erkguid.data").joinpath("PATCHES.md").read_text()
    for src in info["sources"]:
        assert f"`{src}`" in doc  # every photograph is listed with its licence
    x = m.sample(8, seed=0, dtype=torch.float64)
    assert x.shape == (8, 1, side, side)
    torch.testing.assert_close(m(x, 1e-4), x, rtol=0, atol=1e-3)  # D -> identity as sigma -> 0 (floor >= 1e-4)
    assert (m(x, 80.0) - (m.weights[:, None] * m.means).sum(0).reshape(m.shape)).abs().max() < 0.05  # -> the data mean


def test_cli_samples_the_patch_model_as_png_images(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from erkguid.cli import main

    out = tmp_path / "g"
    r = CliRunner().invoke(main, ["generate", "--model", "patches16", "--seeds", "0-2", "--out", str(out), "--steps", "3",
                                  "--w-stiff", "1", "--w-con", "0.05", "--quiet"])
    assert r.exit_code == 0, r.output
    pngs = sorted(out.glob("*/*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (16, 16)
    r = CliRunner().invoke(main, ["profile", "--model", "patches16", "--num-samples", "4", "--steps", "3", "--out",
                                  str(tmp_path / "p"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p" / "profile.json").read_text())["num_samples"] == 4


# The U-Net's recorded statistic (mean / std of 64 samples, Heun 8 steps, float32) moves only with the float32 kernel
# path (batch split, threads, CPU, MKL_CBWR). `python scripts/patch_evidence.py unet-stats` (docs/patches/unet_stats.json)
# measured: other float32 paths 1.3e-9 / 1.9e-9, the whole float32 rounding effect (float64 run) 9.1e-8 / 9.3e-8, and
# a sampling spread over seeds of 0.064 / 0.037. The tolerance is ~100x the float32 rounding effect and still ~4000x
# below the seed spread, so a different network or sampler fails.
UNET_TOL = {"mean": 1e-5, "std": 1e-5}


def test_unet_loads_from_safetensors_and_reproduces_its_recorded_statistic():
    from erkguid.learned import DenoiserUNet, load_learned, read_manifest, sample_statistics

    d = load_learned("patches16-unet")
    e = read_manifest()["patches16-unet"]
    assert isinstance(d.net, DenoiserUNet) and d.shape == (1, 16, 16) and d.num_classes == 0
    assert e["params"] == sum(p.numel() for p in d.net.parameters()) and 0.7e6 < e["params"] < 0.9e6
    rec = e["sample_stats"]
    got = sample_statistics(d, num=rec["num"], steps=rec["steps"])
    assert abs(got["mean"] - rec["mean"]) < UNET_TOL["mean"]
    assert abs(got["std"] - rec["std"]) < UNET_TOL["std"]


def test_em_fit_recovers_a_known_low_rank_mixture_deterministically():
    from erkguid.training.patches import block_mean, fit_lowrank_mixture

    g = torch.Generator().manual_seed(0)
    means = torch.stack([torch.full((8,), -1.0), torch.full((8,), 1.0)]).double()
    true = LowRankMixture([0.3, 0.7], means, 0.5 * torch.randn(2, 8, 2, generator=g, dtype=torch.float64), [0.01, 0.02])
    x = true.sample(4000, seed=1, dtype=torch.float64).numpy()
    params, log = fit_lowrank_mixture(x, 2, 2, iters=8, seed=0, floor_min=1e-4, progress=False)
    fitted = LowRankMixture(params["weights"], torch.from_numpy(params["means"]), torch.from_numpy(params["factors"]),
                            torch.from_numpy(params["floor"]))
    xt = torch.from_numpy(x)
    assert float(fitted.log_prob(xt).mean()) >= float(true.log_prob(xt).mean()) - 0.05  # ML fit: at least the truth's
    assert sorted(params["weights"].round(2).tolist()) == pytest.approx([0.3, 0.7], abs=0.03)
    assert np.allclose(sorted(params["floor"]), [0.01, 0.02], rtol=0.15)
    assert all(b >= a - 1e-9 for a, b in zip(log["loglik_per_patch"], log["loglik_per_patch"][1:]))  # EM never decreases
    again, _ = fit_lowrank_mixture(x, 2, 2, iters=8, seed=0, floor_min=1e-4, progress=False)
    assert all(np.array_equal(params[k], again[k]) for k in params)  # deterministic
    img = np.arange(36, dtype=np.float64).reshape(6, 6)
    assert np.array_equal(block_mean(img, 2), img.reshape(3, 2, 3, 2).mean(axis=(1, 3)))


def test_broadened_and_relabelled_low_rank_mixtures_equal_the_dense_ones():
    m = _random_model(labels=[0, 1, 1, 0])
    weak = m.broadened(1.5)
    torch.testing.assert_close(weak.covariances(), 1.5 * m.covariances(), rtol=1e-12, atol=0)
    x = torch.randn(6, 1, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lab = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.testing.assert_close(weak(x, SIGMAS[:6], class_labels=lab),
                               m.to_dense().broadened(1.5)(x, SIGMAS[:6], class_labels=lab), rtol=0, atol=1e-10)
    other = m.with_labels([1, 0, 0, 1])
    torch.testing.assert_close(other(x, SIGMAS[:6], class_labels=1 - lab), m(x, SIGMAS[:6], class_labels=lab), rtol=0, atol=0)
    with pytest.raises(ValueError, match="factor must be > 0"):
        m.broadened(0.0)


def test_patch_texture_classes_split_flat_from_textured_at_equal_prior_mass():
    from erkguid.models.builtin import patch_classes, texture_classes

    g = patch_classes("patches16")
    base = patch_mixture("patches16")
    tr = g.evals.sum(1) + g.dim * g.floor  # total variance per component
    assert g.num_classes == 4 and g.name == "patches16-classes"
    for c in range(3):  # classes are contiguous, ordered ranges of total variance
        assert tr[g.labels == c].max() < tr[g.labels == c + 1].min()
    mass = torch.stack([g.weights[g.labels == c].sum() for c in range(4)])
    assert (mass - 0.25).abs().max() <= g.weights.max()  # whole components: off by < half of one at each end
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(g(x, 0.5), base(x, 0.5), rtol=0, atol=0)  # labels change nothing unconditionally
    dense_c2 = g.to_dense().for_class(2)
    torch.testing.assert_close(g(x, 0.5, class_labels=torch.full((3,), 2)), dense_c2(x, 0.5), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="num_classes must be in 1..32"):
        texture_classes(base, 33)


def test_paper_suite_runs_the_class_conditional_patch_target():
    from erkguid.experiments.paper import DEFAULT_TARGETS, TARGETS, Evaluator, make_target

    assert "patches16" in TARGETS and "patches16" not in DEFAULT_TARGETS
    t = make_target("patches16", num_ref=64)
    assert (t.shape, t.num_classes, t.space, tuple(t.data.shape)) == ((1, 16, 16), 4, "raw", (64, 1, 16, 16))
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    s, lab = torch.full((4,), 0.7, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    for g in ("cfg", "ag"):  # guidance at scale 1 is the conditional model itself
        torch.testing.assert_close(t.guided(g, 1.0)(x, s, class_labels=lab), t.denoiser(x, s, lab))
    ev = Evaluator(t, 8, rtol=1e-4, num_boot=5)
    base = ev.row("t", "heun", 4, 0.0, 0.5, "cfg", 1.5).flat()
    erk = ev.row("t", "heun", 4, 1.0, 0.05, "cfg", 1.5).flat()
    assert (base["err_ratio"], base["fd_delta"]) == (1.0, 0.0) and base["err_mean"] > 0
    assert erk["err_ratio_lo"] <= erk["err_ratio"] <= erk["err_ratio_hi"] and erk["gated"] > 0


@pytest.mark.filterwarnings("ignore:No artists with labels")  # paper.png's Fig. 4 panel is empty without fig4 rows
def test_cli_paper_suite_runs_the_patch_target(tmp_path):
    from click.testing import CliRunner

    from erkguid.cli import main

    args = ["bench", "--suite", "paper", "--quick", "--targets", "patches16", "--tables", "table2", "--num-samples", "16",
            "--quiet", "--out", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "paper.json").read_text())["rows"]
    assert {x["model"] for x in rows} == {"patches16"} and {x["table"] for x in rows} == {"table2", "table2:official"}
    base = next(x for x in rows if x["w_stiff"] == 0)
    assert (base["err_ratio"], base["fd_delta"]) == (1.0, 0.0) and base["err_mean"] > 0 and base["fd"] > 0
