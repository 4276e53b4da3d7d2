"""Feature-space metrics cross-checked against independent direct computations."""

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from erkguid.feature_metrics import (
    DigitsFeatures,
    extract_features,
    fd_with_extractor,
    feature_report,
    frechet_distance,
    inception_score,
    kid,
    load_feature_extractor,
    precision_recall,
)


def _gauss_sets(seed=0, n=400, d=5):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.3
    return a, b


def test_fd_matches_scipy_sqrtm_formula():
    a, b = _gauss_sets()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a.T), np.cov(b.T)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(ref, rel=1e-8)


def test_kid_matches_explicit_unbiased_sum():
    a, b = _gauss_sets(1, n=40, d=3)
    k = lambda x, y: (np.dot(x, y) / 3 + 1) ** 3  # noqa: E731
    m = len(a)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    val, std = kid(a, b, subset_size=1000)
    assert val == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    assert std == 0.0
    sub, sub_std = kid(a, b, num_subsets=20, subset_size=20, seed=3)
    assert sub_std > 0 and abs(sub - val) < 4 * sub_std


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 2))
    fake = rng.normal(size=(50, 2)) + 2.0
    k = 3

    def manual(ref, query):
        d = cdist(ref, ref)
        radius = np.sort(d, axis=1)[:, k]
        return np.mean([any(np.linalg.norm(q - ref[j]) <= radius[j] for j in range(len(ref))) for q in query])

    p, r = precision_recall(real, fake, k=k)
    assert p == pytest.approx(manual(real, fake))
    assert r == pytest.approx(manual(fake, real))
    assert 0 < p < 1 and 0 < r < 1
    assert precision_recall(real, real + 100.0, k=k) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(real, fake, k=0)


def test_inception_score_limits_and_errors():
    eye = np.eye(4)[np.arange(40) % 4]
    assert inception_score(eye) == pytest.approx(4.0)
    assert inception_score(np.full((10, 4), 0.25)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probs"):
        inception_score(np.full((10, 4), 0.3))
    with pytest.raises(ValueError, match="same feature dimension"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 7)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_user_extractor_file_shapes_and_fd_equality(tmp_path, kind):
    path = tmp_path / ("extractor.pt2" if kind == "export" else "extractor.pt")
    if kind == "export":
        torch.export.save(torch.export.export(_Tiny(), (torch.zeros(2, 1, 8, 8),),
                                              dynamic_shapes=({0: torch.export.Dim("b", min=1, max=1024)},)), str(path))
    else:
        torch.jit.save(torch.jit.script(_Tiny()), str(path))
    ext = load_feature_extractor(path)
    a, b = torch.rand(50, 1, 8, 8) * 2 - 1, torch.rand(45, 1, 8, 8)
    fa = extract_features(ext, a, batch_size=16)
    assert fa.shape == (50, 7)
    with torch.no_grad():
        direct = _Tiny()(a).double().numpy()
    np.testing.assert_allclose(fa, direct, rtol=1e-5, atol=1e-6)
    fd = fd_with_extractor(path, a, b, batch_size=16)
    assert fd == pytest.approx(frechet_distance(direct, _Tiny()(b).detach().double().numpy()), rel=1e-5)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_feature_extractor(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        extract_features(ext, torch.zeros(3, 64))
    bad = tmp_path / "bad.pt"
    torch.jit.save(torch.jit.script(torch.nn.Flatten(0)), str(bad))
    with pytest.raises(ValueError, match=r"must return \[B, D\]"):
        extract_features(load_feature_extractor(bad), a)


def test_digits_features_separate_real_from_noise():
    from erkguid.models import digits_data

    x, y = digits_data()
    feats, probs = DigitsFeatures()(x[:200])
    assert feats.shape == (200, 64) and probs.shape == (200, 10)
    assert (probs.argmax(1) == y[:200].numpy()).mean() > 0.95
    real_vs_real = feature_report(x[:800], x[800:1600], space="digits", kid_subset=400)
    noise = torch.rand(800, 64) * 2 - 1
    noise_vs_real = feature_report(noise, x[800:1600], space="digits", kid_subset=400)
    assert real_vs_real["fd"] * 10 < noise_vs_real["fd"]
    assert real_vs_real["precision"] > 0.6 > noise_vs_real["precision"]
    assert real_vs_real["is"] > 8 > noise_vs_real["is"]
