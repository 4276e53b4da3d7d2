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


@torch.no_grad()
def sd_loop(scheduler, unet, latents, steps=None, sigmas=None, timesteps=None, begin=None, image=None, **unet_kw):
    """The Stable Diffusion pipeline's denoising loop (pipeline_stable_diffusion.py), without text/CFG."""
    if sigmas is not None:
        scheduler.set_timesteps(sigmas=sigmas)
    elif timesteps is not None:
        scheduler.set_timesteps(timesteps=timesteps)
    else:
        scheduler.set_timesteps(steps)
    ts = scheduler.timesteps
    if begin is not None:  # img2img: start part-way, noise the image to that level
        ts = ts[begin:]
        scheduler.set_begin_index(begin)
        x = scheduler.add_noise(image, latents, ts[:1].repeat(latents.shape[0]))
    else:
        x = latents * scheduler.init_noise_sigma
    for t in ts:
        inp = scheduler.scale_model_input(x, t)
        out = unet(inp, t, **unet_kw).sample
        x = scheduler.step(out, t, x, return_dict=False)[0]
    return x


def tiny_sd_pipeline(scheduler, tokenizer_dir: Path):
    """A stock ``StableDiffusionPipeline`` with tiny random components built offline (tokenizer files written to
    ``tokenizer_dir``): 4x8x8 latents, a 1-layer CLIP text encoder, a 2-level cross-attention UNet."""
    import json

    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({t: i + 2 for i, t in enumerate(letters + [c + "</w>" for c in letters])})
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=16, num_attention_heads=2,
                                        num_hidden_layers=1, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
