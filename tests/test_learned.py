"""Shipped learned models, the EDM trainer (checkpoint/resume) and the loader."""

import json

import pytest
import torch

from erkguid import edm_sigmas, sample
from erkguid.denoisers.edm import edm_scalings
from erkguid.learned import (
    DenoiserMLP,
    LearnedDenoiser,
    learned_names,
    load_learned,
    read_manifest,
    sample_statistics,
)
from erkguid.training.edm import PRESETS, TrainConfig, ship, train

DENOISERS = ["digits-main", "digits-weak", "tree2d-main", "tree2d-weak"]


def test_manifest_lists_every_preset_with_provenance():
    m = read_manifest()
    assert learned_names() == sorted(PRESETS)
    for name, e in m.items():
        assert e["arch"] == PRESETS[name].arch and e["steps"] == PRESETS[name].steps and e["seed"] == PRESETS[name].seed
        assert e["final_loss"] > 0


@pytest.mark.recorded
@pytest.mark.parametrize("name", DENOISERS)
def test_shipped_denoiser_reproduces_recorded_sample_statistics(name):
    d = load_learned(name)
    rec = read_manifest()[name]["sample_stats"]
    got = sample_statistics(d)
    # float32 sampling of data of scale ~1: rounding differs between BLAS code paths by ~1e-7 per value (float32 eps),
    # amplified at most ~100x through 31 Heun evaluations; averaging over 256 samples only shrinks it. Measured across
    # MKL_CBWR=COMPATIBLE/SSE4_2 and 1-2 threads: <= 1e-8. abs=1e-5 covers the bound with a 10x margin.
    assert got["mean"] == pytest.approx(rec["mean"], abs=1e-5)
    assert got["std"] == pytest.approx(rec["std"], abs=1e-5)


@pytest.mark.recorded
def test_classifier_accuracy_on_held_out_digits_matches_manifest():
    from erkguid.training.edm import digits_split, load_data

    x, y = load_data("digits")
    _, te = digits_split(0)
    clf = load_learned("digits-classifier")
    with torch.no_grad():
        acc = float((clf(x[te]).argmax(1) == y[te]).float().mean())
    # float32 logits vary between BLAS code paths by ~1e-6: at most a near-tie's argmax may flip, one test digit
    assert acc == pytest.approx(read_manifest()["digits-classifier"]["test_accuracy"], abs=1.01 / len(te))
    assert acc > 0.95


def test_learned_denoiser_semantics():
    d = load_learned("tree2d-main")
    x = torch.randn(6, 2) * 3
    s = torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0, 80.0])
    lab = torch.tensor([0, 1, 0, 1, 2, 2])  # 2 = null (unconditional)
    out = d(x, s, class_labels=lab)
    singles = torch.cat([d(x[i : i + 1], s[i : i + 1], class_labels=lab[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(out, singles, rtol=1e-5, atol=1e-6)  # per-sample semantics
    out64 = d(x.double(), s.double(), class_labels=lab)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, rtol=1e-4, atol=1e-5)
    # EDM preconditioning: D -> x as sigma -> 0 (c_skip -> 1, c_out -> 0)
    torch.testing.assert_close(d(x, torch.full((6,), 1e-6)), x, rtol=0, atol=1e-4)
    c_skip, c_out, c_in, c_noise = edm_scalings(torch.tensor([0.5]), 0.5)
    assert (float(c_skip), float(c_out), float(c_in)) == pytest.approx((0.5, 0.5 / 2**0.5, 2**0.5))
    with pytest.raises(ValueError, match="class_labels"):
        d(x, s, class_labels=torch.tensor([0, 1, 3, 0, 0, 0]))
    with pytest.raises(ValueError, match="name must be one of"):
        load_learned("nope")


def _tiny(steps=6):
    return TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "num_classes": 2, "emb": 8},
                       steps=steps, batch=32, lr=1e-3, ckpt_every=3, note="test")


def test_resume_is_bit_identical_and_ship_roundtrips(tmp_path):
    full = train("tiny", tmp_path / "a", config=_tiny(6), progress=False)
    part = train("tiny", tmp_path / "b", config=_tiny(6), progress=False, until=4)
    assert part.steps == 4
    resumed = train("tiny", tmp_path / "b", config=_tiny(6), progress=False)
    for (k, v), (_, w) in zip(full.net.state_dict().items(), resumed.net.state_dict().items()):
        assert torch.equal(v, w), k
    assert full.final_loss == resumed.final_loss
    fresh = train("tiny", tmp_path / "b", config=_tiny(6), progress=False, resume=False)
    assert all(torch.equal(v, w) for v, w in zip(full.net.state_dict().values(), fresh.net.state_dict().values()))
    entry = ship(full, tmp_path / "ship")
    man = json.loads((tmp_path / "ship" / "manifest.json").read_text())
    assert man["tiny"] == entry and entry["steps"] == 6 and entry["arch"]["hidden"] == 16
    from safetensors.torch import load_file

    net = DenoiserMLP(**{k: v for k, v in entry["arch"].items() if k != "kind"})
    net.load_state_dict(load_file(str(tmp_path / "ship" / "tiny.safetensors")))
    den = LearnedDenoiser(net, entry["sigma_data"])
    assert sample_statistics(den) == entry["sample_stats"]
    x = sample(den, torch.randn(4, 2) * 80, edm_sigmas(4), class_labels=torch.tensor([0, 1, 0, 1]))
    assert torch.isfinite(x).all()
    with pytest.raises(ValueError, match="different settings"):
        cfg = _tiny(6)
        cfg.arch = {**cfg.arch, "hidden": 8}
        train("tiny", tmp_path / "a", config=cfg, progress=False)
    with pytest.raises(ValueError, match="name must be one of"):
        train("nope", None)
