"""EDM training of the small shipped denoisers (Karras et al. 2022, Sec. 5 and Table 1).

Loss: E[lambda(sigma) ||D(y + sigma n; sigma) - y||^2] with lambda = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, ln(sigma) ~ N(P_mean, P_std^2) (P_mean = -1.2, P_std = 1.2), an EMA of the
weights, label dropout for classifier-free guidance. Each step's randomness comes from a generator
seeded by (seed, step), so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..denoisers.edm import edm_scalings
from ..learned import UNET_STATS, DenoiserMLP, DigitsClassifier, LearnedDenoiser, build_net, sample_statistics

P_MEAN, P_STD = -1.2, 1.2


@dataclass
class TrainConfig:
    """One training run. ``data`` is ``tree2d``, ``digits`` or ``patches16``; ``arch`` a manifest architecture."""

    data: str
    arch: dict[str, Any]
    steps: int = 4000
    batch: int = 512
    lr: float = 2e-3
    ema: float = 0.999
    label_dropout: float = 0.1
    seed: int = 0
    ckpt_every: int = 1000
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, TrainConfig] = {
    "tree2d-main": TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 128, "depth": 3, "num_classes": 2, "emb": 32},
                               steps=5000, batch=512, lr=2e-3, note="main model (class-conditional, label dropout 0.1)"),
    "tree2d-weak": TrainConfig("tree2d", {"kind": "mlp", "dim": 2, "hidden": 48, "depth": 2, "num_classes": 2, "emb": 32},
                               steps=1200, batch=512, lr=2e-3, seed=1, note="weak model for autoguidance (smaller, shorter)"),
    "digits-main": TrainConfig("digits", {"kind": "mlp", "dim": 64, "hidden": 192, "depth": 3, "num_classes": 10, "emb": 32},
                               steps=6000, batch=256, lr=1e-3, note="main model (class-conditional, label dropout 0.1)"),
    "digits-weak": TrainConfig("digits", {"kind": "mlp", "dim": 64, "hidden": 64, "depth": 2, "num_classes": 10, "emb": 32},
                               steps=1500, batch=256, lr=1e-3, seed=1, note="weak model for autoguidance (smaller, shorter)"),
    "digits-classifier": TrainConfig("digits", {"kind": "classifier", "dim": 64, "hidden": 128, "feat": 64, "num_classes": 10},
                                     steps=3000, batch=256, lr=1e-3, label_dropout=0.0, ema=0.0,
                                     note="feature extractor / class probabilities for FD, KID, PR, IS"),
    "patches16-unet": TrainConfig("patches16", {"kind": "unet", "size": 16, "in_ch": 1, "channels": [32, 64], "blocks": 2,
                                                "emb": 256}, steps=800, batch=64, lr=1e-3, ema=0.995, label_dropout=0.0,
                                  ckpt_every=100, note="conv U-Net on 16x16 grayscale photograph patches (unconditional; "
                                  "data needs scikit-image at build time)"),
}


def load_data(name: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Training data ``(x [N, d] float32, labels [N])``: ``tree2d`` (100k exact samples of
    :func:`erkguid.tree_2d`, labels drawn from the class prior), ``digits`` (scikit-learn 8x8
    digits scaled v/8 - 1, needs scikit-learn) or ``patches16`` (the 16x16 photograph patches of
    :mod:`erkguid.training.patches`, all label 0, needs scikit-image)."""
    if name == "tree2d":
        from ..models import tree_2d

        m = tree_2d()
        prior = torch.stack([m.weights[m.labels == c].sum() for c in range(m.num_classes)])
        g = torch.Generator().manual_seed(seed)
        lab = torch.multinomial(prior.float(), 100_000, replacement=True, generator=g)
        return m.sample(100_000, seed=seed, class_labels=lab), lab
    if name == "digits":
        from ..models import digits_data

        return digits_data()
    if name == "patches16":
        from .patches import patches

        x = torch.from_numpy(patches(16)[0]).float()
        return x, torch.zeros(x.shape[0], dtype=torch.long)
    raise ValueError(f"data must be 'tree2d', 'digits' or 'patches16', got {name!r}")


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed 80/20 train/test index split of the 1797 digits (for the classifier)."""
    perm = np.random.default_rng(seed).permutation(1797)
    return perm[:1437], perm[1437:]


def edm_loss(net: DenoiserMLP, y: Tensor, labels: Tensor | None, sigma: Tensor, n: Tensor, sigma_data: float) -> Tensor:
    """Per-sample EDM loss lambda(sigma) ||D(y + sigma n) - y||^2 / d, ``[B]``."""
    c_skip, c_out, c_in, c_noise = edm_scalings(sigma, sigma_data)
    x = y + sigma[:, None] * n
    d = c_skip[:, None] * x + c_out[:, None] * net(c_in[:, None] * x, c_noise, labels)
    lam = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return lam * ((d - y) ** 2).mean(1)


def _lr(cfg: TrainConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / 200)
    return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))


def _draw(cfg: TrainConfig, step: int, x: Tensor, lab: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(0, x.shape[0], (cfg.batch,), generator=g)
    sigma = (P_MEAN + P_STD * torch.randn(cfg.batch, generator=g)).exp()
    n = torch.randn(cfg.batch, x.shape[1], generator=g)
    drop = torch.rand(cfg.batch, generator=g) < cfg.label_dropout
    return idx, sigma, n, drop


@dataclass
class TrainResult:
    name: str
    config: dict[str, Any]
    sigma_data: float
    steps: int
    final_loss: float
    net: nn.Module
    extra: dict[str, Any]


def train(name: str, out_dir: str | Path | None, *, steps: int | None = None, resume: bool = True,
          progress: bool = True, config: TrainConfig | None = None, until: int | None = None) -> TrainResult:
    """Train preset ``name`` (or ``config``), checkpointing to ``out_dir/checkpoint.pt`` every
    ``ckpt_every`` steps; with ``resume`` an existing checkpoint is continued. ``until`` stops early
    (after that many steps, with a checkpoint), as an interruption would."""
    if config is None:
        if name not in PRESETS:
            raise ValueError(f"name must be one of {sorted(PRESETS)}, got {name!r}")
        config = copy.deepcopy(PRESETS[name])
    cfg = config
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is much faster than two contended ones
    try:
        with torch.random.fork_rng(devices=[]):  # _train seeds the global RNG; the caller's state is restored
            return _train(name, cfg, out_dir, steps, resume, progress, until)
    finally:
        torch.set_num_threads(threads)


def _train(name: str, cfg: TrainConfig, out_dir: str | Path | None, steps: int | None, resume: bool,
           progress: bool, until: int | None) -> TrainResult:
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        cfg.steps = int(steps)
    torch.manual_seed(cfg.seed)
    x, lab = load_data(cfg.data, seed=cfg.seed)
    if cfg.arch["kind"] == "classifier":
        return _train_classifier(name, cfg, x, lab, out_dir, resume, progress, until)
    sigma_data = round(float(x.std()), 4)
    net = build_net(cfg.arch)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start, losses, seconds = 0, [], 0.0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt is not None and resume and ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        seconds = st.get("seconds", 0.0)
        if st["config"]["arch"] != cfg.arch or st["config"]["data"] != cfg.data:
            raise ValueError(f"checkpoint {ckpt} was made for another configuration; use a new --out or --no-resume")
        net.load_state_dict(st["net"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        start, losses = st["step"], st["losses"]
    null = cfg.arch.get("num_classes", 0)
    stop = cfg.steps if until is None else min(cfg.steps, until)
    bar = tqdm(range(start, stop), disable=not progress, desc=f"train {name}", initial=start, total=cfg.steps)
    t0 = time.perf_counter()
    for step in bar:
        idx, sigma, n, drop = _draw(cfg, step, x, lab)
        labels = torch.where(drop, torch.full_like(lab[idx], null), lab[idx]) if null else None
        for grp in opt.param_groups:
            grp["lr"] = _lr(cfg, step)
        loss = edm_loss(net, x[idx], labels, sigma, n, sigma_data).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        beta = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - beta)
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if ckpt is not None and ((step + 1) % cfg.ckpt_every == 0 or step + 1 == stop):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "losses": losses, "config": asdict(cfg), "seconds": seconds + time.perf_counter() - t0}, ckpt)
    seconds += time.perf_counter() - t0
    final = eval_loss(ema, x, lab, sigma_data, null)
    extra = {"train_loss_last100": float(np.mean(losses[-100:]))}
    if cfg.arch["kind"] == "unet":  # wall time is recorded for the one model whose cost matters
        extra["train_seconds"] = round(seconds, 1)
    return TrainResult(name, asdict(cfg), sigma_data, max(start, stop), final, ema.eval(), extra)


@torch.no_grad()
def eval_loss(net: DenoiserMLP, x: Tensor, lab: Tensor, sigma_data: float, null: int, n: int = 4096) -> float:
    """EDM loss of ``net`` on a fixed seeded batch (conditional when the net has classes)."""
    g = torch.Generator().manual_seed(12345)
    idx = torch.randint(0, x.shape[0], (n,), generator=g)
    sigma = (P_MEAN + P_STD * torch.randn(n, generator=g)).exp()
    noise = torch.randn(n, x.shape[1], generator=g)
    return float(edm_loss(net, x[idx], lab[idx] if null else None, sigma, noise, sigma_data).mean())


def _train_classifier(name: str, cfg: TrainConfig, x: Tensor, lab: Tensor, out_dir: str | Path | None, resume: bool,
                      progress: bool, until: int | None) -> TrainResult:
    tr, te = digits_split(cfg.seed)
    net = build_net(cfg.arch)
    assert isinstance(net, DigitsClassifier)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start = 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt is not None and resume and ckpt.exists():
        st = torch.load(ckpt, weights_only=False)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        start = st["step"]
    xtr, ytr = x[tr], lab[tr]
    stop = cfg.steps if until is None else min(cfg.steps, until)
    for step in tqdm(range(start, stop), disable=not progress, desc=f"train {name}", initial=start, total=cfg.steps):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, len(tr), (cfg.batch,), generator=g)
        aug = xtr[idx] + 0.1 * torch.rand(cfg.batch, 1, generator=g) * torch.randn(cfg.batch, 64, generator=g)
        loss = nn.functional.cross_entropy(net(aug), ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ckpt is not None and ((step + 1) % cfg.ckpt_every == 0 or step + 1 == stop):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step + 1, "config": asdict(cfg)}, ckpt)
    net.eval()
    with torch.no_grad():
        acc = float((net(x[te]).argmax(1) == lab[te]).float().mean())
        final = float(nn.functional.cross_entropy(net(x[te]), lab[te]))
    return TrainResult(name, asdict(cfg), 0.0, max(start, stop), final, net, {"test_accuracy": acc, "test_size": len(te)})


def ship(result: TrainResult, dest: str | Path) -> dict[str, Any]:
    """Write ``dest/<name>.safetensors`` and merge the model's entry into ``dest/manifest.json``."""
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in result.net.state_dict().items()}
    save_file(state, str(dest / f"{result.name}.safetensors"))
    cfg = result.config
    entry: dict[str, Any] = {
        "data": cfg["data"], "arch": cfg["arch"], "steps": result.steps, "seed": cfg["seed"], "batch": cfg["batch"],
        "lr": cfg["lr"], "ema": cfg["ema"], "label_dropout": cfg["label_dropout"], "note": cfg["note"],
        "final_loss": round(result.final_loss, 6), "params": int(sum(v.numel() for v in state.values())), **result.extra,
    }
    if cfg["arch"]["kind"] in ("mlp", "unet"):
        entry["sigma_data"] = result.sigma_data
        den = LearnedDenoiser(result.net, result.sigma_data, name=result.name)
        entry["sample_stats"] = sample_statistics(den, **(UNET_STATS if cfg["arch"]["kind"] == "unet" else {}))
    mpath = dest / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.exists() else {}
    manifest[result.name] = entry
    mpath.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return entry
