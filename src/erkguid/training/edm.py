"""EDM training of the small shipped denoisers (Karras et al. 2022, Sec. 5 and Table 1).

Loss: E[lambda(sigma) ||D(y + sigma n; sigma) - y||^2] with lambda = (sigma^2 + sigma_data^2) /
(sigma sigma_data)^2, ln(sigma) ~ N(P_mean, P_std^2) (P_mean = -1.2, P_std = 1.2), an EMA of the
weights, label dropout for classifier-free guidance. Each step's randomness comes from a generator
seeded by (seed, step), so a resumed run is bit-identical to an uninterrupted one.

Checkpoints (``checkpoint.safetensors``: the tensors of net, EMA and Adam, plus JSON metadata for
step, losses, settings and Adam's hyper-parameters) cannot carry code, and identical states give
identical bytes. They are written atomically (temp file, fsync, rename, fsync of the folder: a run
killed mid-write keeps the previous checkpoint). Older ``checkpoint.pt`` files are still resumed, read
with ``torch.load(weights_only=True)``, which refuses anything that could run code. A checkpoint made
with other settings (including another number of steps) is refused, not mixed.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._io import atomic_write_bytes, atomic_write_json, parse_json, read_json_object, remove_dead_temps
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
    """Train preset ``name`` (or ``config``), checkpointing to ``out_dir/checkpoint.safetensors`` every
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
    net = cast(DenoiserMLP, build_net(cfg.arch))
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start, losses, seconds = 0, [], 0.0
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    found = _existing(ckpt) if ckpt is not None and resume else None
    if found is not None:
        st = load_checkpoint(found, cfg, ("net", "ema", "opt", "step", "losses"))
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
            save_checkpoint(ckpt, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                                   "losses": losses, "config": asdict(cfg)})
    seconds += time.perf_counter() - t0  # this process only: checkpoints hold no wall time (same state, same bytes)
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
    ckpt = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    found = _existing(ckpt) if ckpt is not None and resume else None
    if found is not None:
        st = load_checkpoint(found, cfg, ("net", "opt", "step"))
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
            save_checkpoint(ckpt, {"net": net.state_dict(), "opt": opt.state_dict(), "step": step + 1, "config": asdict(cfg)})
    net.eval()
    with torch.no_grad():
        acc = float((net(x[te]).argmax(1) == lab[te]).float().mean())
        final = float(nn.functional.cross_entropy(net(x[te]), lab[te]))
    return TrainResult(name, asdict(cfg), 0.0, max(start, stop), final, net, {"test_accuracy": acc, "test_size": len(te)})


CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
CKPT_FORMAT = "erkguid-train-checkpoint/1"


def _existing(ckpt: Path) -> Path | None:
    """The checkpoint to resume from: ``checkpoint.safetensors``, else a legacy ``checkpoint.pt``, else None."""
    legacy = ckpt.with_name(LEGACY_CHECKPOINT)
    return ckpt if ckpt.exists() else legacy if legacy.exists() else None


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (``net``/``ema``: state dicts, ``opt``: an optimizer state dict, the rest JSON-able) as one
    safetensors file, atomically (temp files of killed writers are removed first). Same state, same bytes."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {"format": CKPT_FORMAT}
    for key, value in state.items():
        if key in ("net", "ema"):
            tensors.update({f"{key}.{k}": v.detach().contiguous() for k, v in value.items()})
        elif key == "opt":
            for i, slots in value["state"].items():
                tensors.update({f"opt.{i}.{k}": v.detach().contiguous() for k, v in slots.items()})
            meta["opt_param_groups"] = value["param_groups"]
        else:
            meta[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path)
    atomic_write_bytes(path, save(tensors, metadata={"erkguid": json.dumps(meta)}))


def _read_safetensors_checkpoint(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = parse_json((fh.metadata() or {}).get("erkguid", "null"), f"checkpoint {path} (metadata)")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    if not isinstance(meta, dict) or meta.get("format") != CKPT_FORMAT:
        raise ValueError(f"checkpoint {path} is not an erkguid training checkpoint")
    st: dict[str, Any] = {k: v for k, v in meta.items() if k not in ("format", "opt_param_groups")}
    opt: dict[int, dict[str, Tensor]] = {}
    for name, t in tensors.items():
        kind, rest = name.split(".", 1)
        if kind == "opt":
            i, slot = rest.split(".", 1)
            opt.setdefault(int(i), {})[slot] = t
        else:
            st.setdefault(kind, {})[rest] = t
    if "opt_param_groups" in meta:
        st["opt"] = {"state": dict(sorted(opt.items())), "param_groups": meta["opt_param_groups"]}
    return st


def load_checkpoint(path: Path, cfg: TrainConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """Read a training checkpoint without unpickling code and check that it belongs to ``cfg``.

    ``.safetensors`` (this version) or a legacy ``.pt`` read with ``torch.load(weights_only=True)``.
    Errors name the file: unreadable or truncated, holding objects other than tensors and plain data
    (refused, never executed), missing entries, or made with other settings (e.g. another ``--steps``:
    resuming would mix two learning-rate schedules).
    """
    import pickle

    try:
        if path.suffix == ".safetensors":
            st = _read_safetensors_checkpoint(path)
        else:
            st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"checkpoint {path} holds objects other than tensors and plain data; refusing to load it "
                         f"(it could run code). Delete it or use --no-resume. ({str(e).partition(chr(10))[0]})") from None
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"checkpoint {path} is unreadable or truncated ({e}); delete it or use --no-resume") from None
    except Exception as e:  # torch, zipfile and safetensors (SafetensorError) each raise their own types
        raise ValueError(f"checkpoint {path} is unreadable or truncated ({type(e).__name__}: {str(e).partition(chr(10))[0]}); "
                         "delete it or use --no-resume") from None
    lacking = [k for k in (*keys, "config") if not isinstance(st, dict) or k not in st]
    if lacking or not isinstance(st["config"], dict):
        raise ValueError(f"checkpoint {path} lacks entries {lacking or ['config']}; delete it or use --no-resume")
    old, want = st["config"], asdict(cfg)
    diff = ", ".join(f"{k}: {old.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(want) | set(old)) if old.get(k) != want.get(k))
    if diff:
        raise ValueError(f"checkpoint {path} was made with different settings ({diff}); resuming would mix them. "
                         "Use a new --out or --no-resume")
    return st


def ship(result: TrainResult, dest: str | Path) -> dict[str, Any]:
    """Write ``dest/<name>.safetensors`` and merge the model's entry into ``dest/manifest.json``."""
    from safetensors.torch import save

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in result.net.state_dict().items()}
    atomic_write_bytes(dest / f"{result.name}.safetensors", save(state))
    cfg = result.config
    entry: dict[str, Any] = {
        "data": cfg["data"], "arch": cfg["arch"], "steps": result.steps, "seed": cfg["seed"], "batch": cfg["batch"],
        "lr": cfg["lr"], "ema": cfg["ema"], "label_dropout": cfg["label_dropout"], "note": cfg["note"],
        "final_loss": round(result.final_loss, 6), "params": int(sum(v.numel() for v in state.values())), **result.extra,
    }
    if cfg["arch"]["kind"] in ("mlp", "unet"):
        entry["sigma_data"] = result.sigma_data
        den = LearnedDenoiser(cast(DenoiserMLP, result.net), result.sigma_data, name=result.name)
        entry["sample_stats"] = sample_statistics(den, **(UNET_STATS if cfg["arch"]["kind"] == "unet" else {}))
    mpath = dest / "manifest.json"
    manifest = read_json_object(mpath, what="manifest") if mpath.exists() else {}
    manifest[result.name] = entry
    atomic_write_json(mpath, dict(sorted(manifest.items())))
    return entry
