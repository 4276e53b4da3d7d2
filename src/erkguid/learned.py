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
        self.shape = tuple(shape) if shape is not None else (net.dim,)
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


def sample_statistics(denoiser: LearnedDenoiser) -> dict[str, Any]:
    """Mean and std over all coordinates of 256 samples (seeds 0..255, sigma_max 80, Heun 16 EDM
    steps, float32; conditional models get labels ``seed % num_classes``): recorded in the manifest."""
    from .noise import randn_from_seeds
    from .sampling import sample
    from .schedules import edm_sigmas

    x0 = randn_from_seeds(STATS_SEEDS, denoiser.shape, sigma=80.0)
    extra: dict[str, Any] = {}
    if denoiser.num_classes > 0:
        extra["class_labels"] = torch.arange(len(STATS_SEEDS)) % denoiser.num_classes
    x = sample(denoiser, x0, edm_sigmas(STATS_STEPS), solver="heun", extra_args=extra)
    return {"mean": float(x.double().mean()), "std": float(x.double().std()), "num": len(STATS_SEEDS),
            "solver": "heun", "steps": STATS_STEPS}
