"""The one interval module (erkguid.metrics): paired bootstrap over samples, t-interval over a few runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erkguid.metrics import bootstrap_ci, paired_bootstrap, paired_t, ratio_ci


def test_ratio_ci_is_the_paired_percentile_bootstrap_of_the_ratio_of_means() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(57, generator=g, dtype=torch.float64) + 0.5
    err = 0.7 * base + 0.05 * torch.rand(57, generator=g, dtype=torch.float64)
    ratio, lo, hi = ratio_ci(err, base, num=400, seed=3)
    rng = np.random.default_rng(3)  # independent loop: resample the same sample indices for both
    boots = []
    for _ in range(400):
        i = rng.integers(0, 57, 57)
        boots.append(err.numpy()[i].mean() / base.numpy()[i].mean())
    assert ratio == pytest.approx(float(err.mean() / base.mean()), rel=1e-14)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(boots, [0.025, 0.975])), rel=1e-12)  # row means: summation order
    assert bootstrap_ci(err.numpy(), num=400, seed=3) == paired_bootstrap(lambda i: err.numpy()[i].mean(), 57, 400, seed=3)
    with pytest.raises(ValueError, match="at least one sample"):
        paired_bootstrap(np.mean, 0)


def test_paired_t_matches_scipy() -> None:
    from scipy import stats

    a, b = [0.31, 0.29, 0.35, 0.30, 0.33], [0.36, 0.30, 0.37, 0.34, 0.35]
    d = np.subtract(a, b)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    got = paired_t(a, b)
    assert got["mean"] == pytest.approx(d.mean()) and got["a_lower"] == 5 and got["n"] == 5
    assert (got["lo"] + got["hi"]) / 2 == pytest.approx(d.mean(), rel=1e-12)
    assert (got["hi"] - got["lo"]) == pytest.approx(hi - lo, rel=2e-4)  # T975 holds t quantiles to 4 digits
