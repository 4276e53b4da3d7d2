"""Small learned denoisers shipped with the package, and their network definitions.

The weights live in ``erkguid/data/models/<name>.safetensors`` with one JSON manifest
(``manifest.json``: data, architecture, training steps, seed, final loss and recorded sample
statistics). They are trained by ``erkguid train`` (``erkguid.training.edm``); loading needs
only ``torch`` and ``safetensors``. Networks use EDM preconditioning (Karras et al. 2022;
:func:`erkguid.denoisers.edm.edm_scalings`):

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma), class).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any, cast

import torch
from torch import Tensor, nn

from ._batch import acc_dtype, on_host, sigma_vector
from .denoisers.edm import edm_scalings

MODELS_PACKAGE = "erkguid.data.models"


class DenoiserMLP(nn.Module):
    """Residual MLP ``F(x_in, c_noise, class)`` on flattened states.

    The noise level enters through fixed Fourier features of ``c_noise``; the class through an
    embedding with one extra "null" row (index ``num_classes``), used for unconditional calls and
    for label dropout during training (classifier-free guidance from one network).
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, num_classes: int = 0, emb: int = 32) -> None:
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(64.0), emb // 2)), persistent=False)
        self.inp = nn.Linear(dim, hidden)
        self.noise_emb = nn.Linear(emb, hidden)
        self.class_emb = nn.Embedding(num_classes + 1, hidden) if num_classes > 0 else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        freqs: Tensor = self.freqs  # type: ignore[assignment]
        ang = c_noise[:, None].to(x.dtype) * freqs.to(x.dtype)
        e = self.noise_emb(torch.cat([ang.sin(), ang.cos()], 1))
        if self.class_emb is not None:
            if class_labels is None:
                class_labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            e = e + self.class_emb(class_labels.long().reshape(-1))
        h = self.inp(x) + e
        for blk in self.blocks:
            h = h + blk(h)
        return self.out(h)


def _fourier(c_noise: Tensor, freqs: Tensor, dtype: torch.dtype) -> Tensor:
    ang = c_noise[:, None].to(dtype) * freqs.to(dtype)
    return torch.cat([ang.sin(), ang.cos()], 1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the noise embedding added in between, a 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


class _Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map (residual)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = nn.GroupNorm(8, ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # [B, HW, HW]
        return x + self.proj((v @ a.transpose(1, 2)).reshape(b, c, h, w))


class DenoiserUNet(nn.Module):
    """A small conv U-Net ``F(x_in, c_noise)`` on ``[B, C*H*W]`` states (reshaped to ``[B, C, H, W]``).

    Two resolutions (H and H/2) with ``channels`` widths, ``blocks`` residual blocks per level,
    one self-attention block at the lower resolution; the noise level enters through Fourier
    features of ``c_noise`` and a two-layer MLP added in every residual block. Unconditional.
    """

    def __init__(self, size: int = 16, in_ch: int = 1, channels: tuple[int, int] = (32, 64), blocks: int = 2,
                 emb: int = 128, num_classes: int = 0) -> None:
        super().__init__()
        if num_classes:
            raise ValueError("DenoiserUNet is unconditional (num_classes must be 0)")
        c1, c2 = channels
        self.image_shape = (in_ch, size, size)
        self.dim, self.num_classes = in_ch * size * size, 0
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(64.0), 16)), persistent=False)
        self.emb = nn.Sequential(nn.Linear(32, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.inp = nn.Conv2d(in_ch, c1, 3, padding=1)
        self.enc1 = nn.ModuleList(_ResBlock(c1, c1, emb) for _ in range(blocks))
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc2 = nn.ModuleList(_ResBlock(c2, c2, emb) for _ in range(blocks))
        self.mid1, self.attn, self.mid2 = _ResBlock(c2, c2, emb), _Attention(c2), _ResBlock(c2, c2, emb)
        self.dec2 = nn.ModuleList(_ResBlock(2 * c2 if i == 0 else c2, c2, emb) for i in range(blocks))
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1))
        self.dec1 = nn.ModuleList(_ResBlock(2 * c1 if i == 0 else c1, c1, emb) for i in range(blocks))
        self.out = nn.Sequential(nn.GroupNorm(8, c1), nn.SiLU(), nn.Conv2d(c1, in_ch, 3, padding=1))

    def forward(self, x: Tensor, c_noise: Tensor, class_labels: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        e = self.emb(_fourier(c_noise, cast(Tensor, self.freqs), x.dtype))
        h = self.inp(x.reshape(b, *self.image_shape))
        for blk in self.enc1:
            h = blk(h, e)
        s1 = h
        h = self.down(h)
        for blk in self.enc2:
            h = blk(h, e)
        s2 = h
        h = self.mid2(self.attn(self.mid1(h, e)), e)
        h = torch.cat([h, s2], 1)
        for blk in self.dec2:
            h = blk(h, e)
        h = torch.cat([self.up(h), s1], 1)
        for blk in self.dec1:
            h = blk(h, e)
        return self.out(h).reshape(b, -1)


class DigitsClassifier(nn.Module):
    """MLP classifier on 8x8 digits in [-1, 1]; ``features`` (penultimate layer) feed FD/KID/PR."""

    def __init__(self, dim: int = 64, hidden: int = 128, feat: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, feat), nn.SiLU())
        self.head = nn.Linear(feat, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.reshape(x.shape[0], -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class LearnedDenoiser:
    """An EDM-preconditioned network as an erkguid denoiser ``D(x, sigma, class_labels=None)``.

    Runs in the dtype of ``x`` (a float64 copy of the weights is made on first float64 call, so
    reference solves are not limited by float32 round-off). The weights are frozen copies, so
    sampling records no parameter graph, while D stays differentiable in ``x`` (diagnostics take
    Jacobians and JVPs of it).
    """

    def __init__(self, net: DenoiserMLP, sigma_data: float, name: str = "learned", manifest: dict[str, Any] | None = None,
                 shape: tuple[int, ...] | None = None) -> None:
        self.net = net.eval()
        self.sigma_data = float(sigma_data)
        self.name = name
        self.manifest = manifest or {}
        self.shape = tuple(shape) if shape is not None else tuple(getattr(net, "image_shape", (net.dim,)))
        self.num_classes = net.num_classes
        self._copies: dict[tuple[torch.dtype, torch.device], DenoiserMLP] = {}  # frozen copies; the caller's net is untouched
        # the float32 copy is made now, so torch.compile traces a lookup, not a deepcopy (other keys: on first eager call)
        self._net(torch.float32, next(net.parameters()).device)

    def __repr__(self) -> str:
        return f"LearnedDenoiser({self.name!r}, shape={self.shape}, num_classes={self.num_classes}, sigma_data={self.sigma_data})"

    def _net(self, dtype: torch.dtype, device: torch.device) -> DenoiserMLP:
        key = (dtype, torch.device(device))
        if key not in self._copies:
            import copy

            self._copies[key] = copy.deepcopy(self.net).to(device, dtype).requires_grad_(False)  # no parameter graph
        return self._copies[key]

    def __call__(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None) -> Tensor:
        """EDM D(x; sigma). Differentiable in x (diagnostics take Jacobians/JVPs); parameters are frozen."""
        dtype = acc_dtype(x.dtype)
        b = x.shape[0]
        s = sigma_vector(sigma, x, dtype=dtype)
        if class_labels is not None:
            class_labels = torch.as_tensor(class_labels).reshape(-1).long()
            if self.num_classes == 0:
                raise ValueError(f"class_labels given but learned model {self.name!r} is unconditional")
            if class_labels.numel() != b or (on_host(class_labels) and not bool(
                    ((class_labels >= 0) & (class_labels <= self.num_classes)).all())):  # values read only where free
                raise ValueError(f"class_labels must hold {b} labels in [0, {self.num_classes}] ({self.num_classes} = null)")
            class_labels = class_labels.to(x.device)
        c_skip, c_out, c_in, c_noise = edm_scalings(s, self.sigma_data)
        xf = x.reshape(b, -1).to(dtype)
        f = self._net(dtype, x.device)(xf * c_in[:, None], c_noise, class_labels)
        return (c_skip[:, None] * xf + c_out[:, None] * f).reshape(x.shape).to(x.dtype)


def read_manifest() -> dict[str, Any]:
    """The shipped models' manifest (``{name: entry}``)."""
    with resources.files(MODELS_PACKAGE).joinpath("manifest.json").open("r") as fh:
        return json.load(fh)


def learned_names() -> list[str]:
    """Names of the shipped learned models."""
    return sorted(read_manifest())


def build_net(arch: dict[str, Any]) -> nn.Module:
    """Instantiate a network from a manifest ``arch`` entry."""
    kind = arch.get("kind")
    kw = {k: v for k, v in arch.items() if k != "kind"}
    if kind == "mlp":
        return DenoiserMLP(**kw)
    if kind == "classifier":
        return DigitsClassifier(**kw)
    if kind == "unet":
        return DenoiserUNet(**{**kw, "channels": tuple(kw.get("channels", (32, 64)))})
    raise ValueError(f"unknown architecture kind {kind!r}")


def _load_state(name: str) -> dict[str, Tensor]:
    from safetensors.torch import load

    with resources.files(MODELS_PACKAGE).joinpath(f"{name}.safetensors").open("rb") as fh:
        return load(fh.read())


def load_learned(name: str) -> Any:
    """Load a shipped model by name (see :func:`learned_names`).

    Denoisers (``tree2d-main``, ``tree2d-weak``, ``digits-main``, ``digits-weak``) come back as a
    :class:`LearnedDenoiser`; ``digits-classifier`` as a :class:`DigitsClassifier` in eval mode.
    """
    manifest = read_manifest()
    if name not in manifest:
        raise ValueError(f"name must be one of {sorted(manifest)}, got {name!r}")
    entry = manifest[name]
    net = build_net(entry["arch"])
    net.load_state_dict(_load_state(name))
    net.eval()
    if entry["arch"]["kind"] == "classifier":
        return net
    return LearnedDenoiser(cast(DenoiserMLP, net), entry["sigma_data"], name=name, manifest=entry)


STATS_SEEDS = range(256)
STATS_STEPS = 16
UNET_STATS = {"num": 64, "steps": 8}  # the U-Net's recorded statistic: cheap enough for a test


def sample_statistics(denoiser: LearnedDenoiser, num: int = len(STATS_SEEDS), steps: int = STATS_STEPS) -> dict[str, Any]:
    """Mean and std over all coordinates of ``num`` samples (seeds 0..num-1, sigma_max 80, Heun ``steps`` EDM
    steps, float32; conditional models get labels ``seed % num_classes``): recorded in the manifest."""
    from .noise import randn_from_seeds
    from .sampling import sample
    from .schedules import edm_sigmas

    seeds = range(num)
    x0 = randn_from_seeds(seeds, denoiser.shape, sigma=80.0)
    extra: dict[str, Any] = {}
    if denoiser.num_classes > 0:
        extra["class_labels"] = torch.arange(num) % denoiser.num_classes
    x = sample(denoiser, x0, edm_sigmas(steps), solver="heun", extra_args=extra)
    return {"mean": float(x.double().mean()), "std": float(x.double().std()), "num": num, "solver": "heun", "steps": steps}
