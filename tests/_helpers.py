"""Helpers shared by several test files (fixtures that use them live in conftest.py)."""

from __future__ import annotations

import pickle
import sys
import textwrap
from pathlib import Path

import torch

# A stand-in for an EDM/EDM2 preconditioned network, defined inside a fake source checkout
# (torch_utils/tiny.py) so that its pickle needs that checkout to load, like a real snapshot.
TINY_EDM = textwrap.dedent(
    """
    import torch

    class TinyPrecond(torch.nn.Module):
        def __init__(self, label_dim=3):
            super().__init__()
            self.label_dim, self.img_channels, self.img_resolution, self.sigma_data = label_dim, 1, 4, 0.5
            self.lin = torch.nn.Linear(16 + label_dim + 1, 16)

        def forward(self, x, sigma, class_labels=None, force_fp32=False):
            b = x.shape[0]
            s = sigma.reshape(b, 1)
            lab = torch.zeros(b, self.label_dim) if class_labels is None else class_labels
            c_in = 1 / (s**2 + 0.25).sqrt()
            f = self.lin(torch.cat([x.reshape(b, 16) * c_in, lab, s.log() / 4], 1))
            d = 0.25 / (s**2 + 0.25) * x.reshape(b, 16) + s * 0.5 / (s**2 + 0.25).sqrt() * f
            return d.reshape(x.shape)
    """
)


def forget_edm_modules() -> None:
    """Drop the fake checkout's modules so the next unpickling must find them again."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("torch_utils", "dnnlib")]:
        del sys.modules[name]


def make_edm_checkout(root: Path) -> tuple[Path, Path, torch.nn.Module]:
    """A fake EDM/EDM2 checkout under ``root`` and a pickled ``{"ema": TinyPrecond}`` snapshot:
    ``(source_dir, pickle_path, net)``."""
    src = root / "edm2"
    (src / "torch_utils").mkdir(parents=True)
    (src / "dnnlib").mkdir()
    (src / "torch_utils" / "__init__.py").write_text("")
    (src / "dnnlib" / "__init__.py").write_text("")
    (src / "torch_utils" / "tiny.py").write_text(TINY_EDM)
    sys.path.insert(0, str(src))
    forget_edm_modules()
    try:
        from torch_utils.tiny import TinyPrecond  # noqa: PLC0415

        torch.manual_seed(0)
        net = TinyPrecond()
        pkl = root / "network-snapshot.pkl"
        with pkl.open("wb") as fh:
            pickle.dump({"ema": net, "loss_fn": None}, fh)
    finally:
        sys.path.remove(str(src))
        forget_edm_modules()
    return src, pkl, net


def tiny_unet(seed: int = 0, size: int = 8, ch: int = 3, num_class_embeds: int | None = None):
    """A tiny random diffusers ``UNet2DModel`` (built offline; seeded init), in eval mode."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=size, in_channels=ch, out_channels=ch, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds).eval()


def save_scheduler(path: Path, **cfg: object) -> None:
    """Write ``path/scheduler_config.json`` (a diffusers scheduler config) with ``cfg``."""
    import json

    path.mkdir(parents=True, exist_ok=True)
    (path / "scheduler_config.json").write_text(json.dumps(cfg))
