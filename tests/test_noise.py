"""Per-sample noise: the counter-based Philox-4x32-10 stream and the unchanged initial-noise stream."""

from __future__ import annotations

import math
import random

import pytest
import torch

from erkguid import noise as N
from erkguid.noise import PerSampleNoise, philox4x32, philox_normal, randn_from_seeds

M, W, MASK = (0xD2511F53, 0xCD9E8D57), (0x9E3779B9, 0xBB67AE85), 0xFFFFFFFF


def philox_ref(c: list[int], k: list[int]) -> list[int]:
    """Philox-4x32-10 written out with Python integers (Salmon et al. 2011, Random123's round function)."""
    for r in range(10):
        if r:
            k = [(k[0] + W[0]) & MASK, (k[1] + W[1]) & MASK]
        p0, p1 = M[0] * c[0], M[1] * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK]
    return c


def normal_ref(seed: int, draw: int, n: int) -> list[float]:
    """The documented mapping with Python floats: block j gives elements j, j+m, j+2m, j+3m."""
    m = (n + 3) // 4
    out = [0.0] * (4 * m)
    for j in range(m):
        w = philox_ref([j & MASK, j >> 32, draw & MASK, draw >> 32], [seed & MASK, (seed >> 32) & MASK])
        for p in (0, 1):
            r = math.sqrt(-2.0 * math.log((w[2 * p] + 0.5) * 2.0**-32))
            t = (w[2 * p + 1] + 0.5) * 2.0**-32 * 2 * math.pi
            out[(2 * p) * m + j], out[(2 * p + 1) * m + j] = r * math.cos(t), r * math.sin(t)
    return out[:n]


def _words(vals: list[list[int]], i: int) -> torch.Tensor:
    return torch.tensor([v[i] for v in vals], dtype=torch.int64)


@pytest.mark.parametrize(
    "ctr,key,expected",
    [  # Random123 known-answer vectors for philox4x32_10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_known_answers(ctr, key, expected):
    assert philox_ref(list(ctr), list(key)) == list(expected)
    got = philox4x32([torch.tensor([c]) for c in ctr], [torch.tensor([k]) for k in key])
    assert [int(g) for g in got] == list(expected)


def test_vectorised_philox_matches_the_python_reference_on_random_words():
    rng = random.Random(0)
    ctr = [[rng.getrandbits(32) for _ in range(4)] for _ in range(400)]
    key = [[rng.getrandbits(32) for _ in range(2)] for _ in range(400)]
    got = philox4x32([_words(ctr, i) for i in range(4)], [_words(key, i) for i in range(2)])
    assert all(0 <= int(g.min()) and int(g.max()) <= MASK for g in got)
    assert [[int(g[r]) for g in got] for r in range(400)] == [philox_ref(c, k) for c, k in zip(ctr, key)]


def test_philox_normal_matches_the_python_reference():
    seeds, n = [0, 7, 2**40 + 3], 37  # a seed above 2^32 exercises the key's high word; n % 4 != 0
    got = philox_normal(seeds, 5, (n,), torch.float64)
    ref = torch.tensor([normal_ref(s, 5, n) for s in seeds], dtype=torch.float64)
    # identical integer words; libm vs vectorised log/sin/cos differ by a few ulp at most
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)
    f32 = philox_normal(seeds, 5, (n,), torch.float32)
    # float32 Box-Muller: u has 24-bit resolution, so r = sqrt(-2 ln u) can move by up to sqrt(2 * 2^-24) near u = 1
    assert f32.dtype == torch.float32 and (f32.double() - ref).abs().max() < math.sqrt(2 * 2.0**-24) + 1e-5


def test_a_sample_noise_depends_only_on_its_seed_draw_and_element(monkeypatch):
    batch = philox_normal(list(range(10, 26)), 3, (5, 7))
    alone = philox_normal([17], 3, (5, 7))
    assert torch.equal(batch[7], alone[0])  # batch invariance
    monkeypatch.setitem(N._CHUNK_BLOCKS, "cpu", 3)  # many small passes: the counter makes chunking invisible
    assert torch.equal(philox_normal(list(range(10, 26)), 3, (5, 7)), batch)
    assert not torch.equal(philox_normal(list(range(10, 26)), 4, (5, 7)), batch)  # the draw counter matters


def test_per_sample_noise_advances_its_draw_counter_and_reproduces():
    a, b = PerSampleNoise([3, 4]), PerSampleNoise([3, 4])
    like = torch.zeros(2, 6, dtype=torch.float64)
    d0, d1 = a(like), a(like)
    assert a.draws == 2 and d0.dtype == torch.float64 and not torch.equal(d0, d1)
    assert torch.equal(b(like), d0) and torch.equal(b.randn((6,), torch.float64), d1)
    assert torch.equal(d1, philox_normal([3, 4], 1, (6,), torch.float64))
    with pytest.raises(ValueError, match="batch of 3"):
        a(torch.zeros(3, 6))


def test_philox_normal_is_standard_normal():
    """Moments, tail mass, a KS statistic and within-block correlation of 2^16 draws, each with a
    tolerance of about 5 standard errors (KS: the 0.1 % critical value 1.95 / sqrt(n))."""
    z = philox_normal(list(range(4)), 0, (16384,), torch.float64)
    x = z.flatten()
    n = x.numel()
    assert abs(float(x.mean())) < 5 / math.sqrt(n)
    assert abs(float(x.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((x**3).mean())) < 5 * math.sqrt(15 / n)  # skewness: Var(z^3) = 15
    assert abs(float((x**4).mean()) - 3) < 5 * math.sqrt(96 / n)  # kurtosis: Var(z^4) = 105 - 9
    p_tail = math.erfc(3 / math.sqrt(2))
    assert abs(float((x.abs() > 3).double().mean()) - p_tail) < 5 * math.sqrt(p_tail / n)
    xs = x.sort().values
    cdf = 0.5 * torch.erfc(-xs / math.sqrt(2))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())
    assert ks < 1.95 / math.sqrt(n)
    m = 16384 // 4  # elements j and j + m share a Philox block (cos/sin of one Box-Muller pair)
    for a, b in ((0, 1), (0, 2), (1, 3)):
        r = float((z[:, a * m : (a + 1) * m] * z[:, b * m : (b + 1) * m]).mean())
        assert abs(r) < 5 / math.sqrt(4 * m)
    across = float((z[0] * z[1]).mean())  # neighbouring seeds are independent
    assert abs(across) < 5 / math.sqrt(16384)


def test_initial_noise_stream_is_one_torch_generator_per_sample():
    got = randn_from_seeds([3, 9], (2, 5), sigma=2.5, dtype=torch.float32)
    ref = torch.stack([torch.randn((2, 5), generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (3, 9)])
    assert torch.equal(got, (ref.float() * 2.5))
    assert torch.equal(randn_from_seeds([9], (2, 5)), ref[1:].float())
