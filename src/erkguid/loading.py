"""Load real checkpoints offline as erkguid denoisers (nothing is downloaded).

* :func:`load_edm_pickle` -- EDM / EDM2 network pickles (``network-snapshot-*.pkl``); they need
  the ``torch_utils`` and ``dnnlib`` modules of the user's EDM/EDM2 source checkout. Unpickling a
  file runs whatever code it holds, so it needs ``allow_pickle=True`` (CLI: ``--allow-pickle``):
  use it only for pickles you trust as much as a program.
* :func:`load_diffusers` -- diffusers models saved locally (``UNet2DModel``, ``UNet2DConditionModel``,
  ``DiTTransformer2DModel`` or any diffusers model class); the adapter (epsilon / v / x0 / flow)
  is picked from the saved scheduler config. Needs the optional ``diffusers`` extra.

Conditioning is passed through as keyword arguments of the denoiser: ``class_labels`` (integer
labels; one-hot encoded for EDM nets with ``label_dim > 0``), ``encoder_hidden_states`` (text
embeddings of ``UNet2DConditionModel``) or any other keyword the network's ``forward`` accepts.
"""

from __future__ import annotations

import inspect
import pickle
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._batch import on_host
from ._io import read_json_object
from .denoisers import DiscreteVPSchedule, FlowDenoiser, VPDenoiser
from .denoisers._common import check_output, sigma_vector

PICKLE_RISK = ("unpickling runs any code the file holds; allow it only for a pickle you trust as much as a program "
               "you would run (allow_pickle=True in Python, --allow-pickle on the command line)")

# ----------------------------------------------------------------------------- EDM / EDM2 pickles


class EDMNetDenoiser:
    """An EDM/EDM2 preconditioned network (``net(x, sigma, class_labels)`` returns D) as a denoiser.

    Integer ``class_labels`` ``[B]`` are one-hot encoded to ``[B, label_dim]``; a float
    ``[B, label_dim]`` tensor passes through (EDM's convention). The net runs in float32.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)

    def __call__(self, x: Tensor, sigma: Tensor | float, class_labels: Tensor | None = None, **kw: Any) -> Tensor:
        s = sigma_vector(sigma, x)
        labels = class_labels
        if labels is not None and self.label_dim > 0 and not labels.is_floating_point():
            if labels.ndim != 1 or labels.numel() != x.shape[0]:
                raise ValueError(f"class_labels must be [B] integers or [B, {self.label_dim}] one-hot, got {tuple(labels.shape)}")
            if on_host(labels) and not bool(((labels >= 0) & (labels < self.label_dim)).all()):  # no device sync
                raise ValueError(f"class_labels must lie in [0, {self.label_dim}), got {labels.tolist()[:8]}")
            labels = torch.nn.functional.one_hot(labels.long(), self.label_dim).to(torch.float32)
        with torch.no_grad():
            out = self.net(x.to(torch.float32), s.to(torch.float32), labels, **kw)
        return check_output(out, x, "EDM net").to(x.dtype)


@dataclass
class LoadedEDM:
    denoiser: EDMNetDenoiser
    net: torch.nn.Module
    data: dict[str, Any] = field(repr=False)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(img_channels, img_resolution, img_resolution)`` of the network."""
        net: Any = self.net  # EDM's networks carry these attributes
        return (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))


def _check_edm_source(source_dir: str | Path) -> Path:
    src = Path(source_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"source_dir {str(src)!r} does not exist: pass the path of your EDM/EDM2 source checkout")
    missing = [m for m in ("torch_utils", "dnnlib") if not (src / m).is_dir()]
    if missing:
        raise ValueError(
            f"source_dir {str(src)!r} is not an EDM/EDM2 checkout: it has no {' or '.join(m + '/' for m in missing)} "
            "(clone https://github.com/NVlabs/edm2 or NVlabs/edm and pass its root)"
        )
    return src.resolve()


def load_edm_pickle(
    pickle_path: str | Path, source_dir: str | Path, *, key: str = "ema", device: str | torch.device = "cpu",
    allow_pickle: bool = False,
) -> LoadedEDM:
    """Load an EDM/EDM2 network pickle as a denoiser ``D(x, sigma[B], class_labels=None)``.

    Args:
        pickle_path: the ``.pkl`` file (a dict holding the network under ``key``).
        source_dir: root of the EDM/EDM2 source checkout providing ``torch_utils``/``dnnlib``;
            it is put on ``sys.path`` while unpickling (the loaded modules stay in ``sys.modules``).
        key: dict entry of the network (``ema`` for both EDM and EDM2 snapshots).
        device: where the network is moved.
        allow_pickle: must be ``True``: unpickling runs any code the file holds, so only load pickles you
            trust (the default refuses with a ValueError before the file is opened).
    """
    path = Path(pickle_path).expanduser()
    if allow_pickle is not True:
        raise ValueError(f"pickle_path {str(path)!r}: refusing to unpickle an EDM/EDM2 network pickle: {PICKLE_RISK}")
    if not path.is_file():
        raise FileNotFoundError(f"pickle_path {str(path)!r} does not exist or is not a file")
    src = str(_check_edm_source(source_dir))
    added = src not in sys.path
    if added:
        sys.path.insert(0, src)
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"unpickling {str(path)!r} needs module {e.name!r}, which source_dir {src!r} does not provide; "
            "is it the checkout (EDM vs EDM2) the pickle was made with?"
        ) from e
    except (pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"pickle_path {str(path)!r} is not a readable network pickle: {e}") from e
    finally:
        if added:
            sys.path.remove(src)
    if isinstance(data, Mapping):
        if key not in data:
            raise KeyError(f"pickle {str(path)!r} has no entry {key!r}; entries: {sorted(map(str, data))}")
        net = data[key]
        data = dict(data)
    else:
        net, data = data, {}
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"entry {key!r} of {str(path)!r} is a {type(net).__name__}, not a torch network")
    net = net.eval().requires_grad_(False).to(device)
    return LoadedEDM(EDMNetDenoiser(net), net, data)


# ----------------------------------------------------------------------------- diffusers

SCHEDULER_FILE = "scheduler_config.json"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")


class DiffusersNet:
    """Call a diffusers model as ``net(x_in, t[B], **cond) -> tensor`` (``.sample`` unwrapped).

    Models that predict a learned variance as extra channels (DiT: ``out_channels = 2 *
    in_channels``) return only the first ``in_channels`` channels.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        config: Any = model.config  # a diffusers model's config
        self.in_channels = int(config.get("in_channels", 0) or 0)
        p = next(model.parameters(), None)
        self.dtype = p.dtype if p is not None else torch.float32

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        with torch.no_grad():
            out = self.model(x.to(self.dtype), t.to(torch.float32), **cond, return_dict=False)[0]
        if self.in_channels and out.ndim == x.ndim and out.shape[1] == 2 * self.in_channels:
            out = out[:, : self.in_channels]
        return out.to(x.dtype)


@dataclass
class LoadedDiffusers:
    denoiser: VPDenoiser | FlowDenoiser
    model: torch.nn.Module
    scheduler_config: dict[str, Any]
    kind: str  # "epsilon", "v_prediction", "sample" or "flow"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        cfg: Any = self.model.config
        size = cfg.get("sample_size")
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(cfg["in_channels"]), *size)

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max) the model was trained on (flow models: (0.001, 1000) by convention)."""
        if isinstance(self.denoiser, VPDenoiser):
            s: Any = self.denoiser.schedule  # DiscreteVPSchedule / ContinuousVPSchedule both have the range
            return s.sigma_min, s.sigma_max
        return 1e-3, 1e3


def _find_scheduler_config(model_dir: Path, scheduler_config: str | Path | None) -> Path:
    if scheduler_config is not None:
        p = Path(scheduler_config).expanduser()
        p = p / SCHEDULER_FILE if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"scheduler_config {str(p)!r} does not exist")
        return p
    for p in (model_dir / SCHEDULER_FILE, model_dir.parent / "scheduler" / SCHEDULER_FILE,
              model_dir / "scheduler" / SCHEDULER_FILE):
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no {SCHEDULER_FILE} found for model_dir {str(model_dir)!r} (looked in it, in ../scheduler/ and in scheduler/); "
        "pass scheduler_config="
    )


def load_diffusers(
    model_dir: str | Path,
    *,
    scheduler_config: str | Path | None = None,
    device: str | torch.device = "cpu",
    torch_dtype: torch.dtype | None = None,
) -> LoadedDiffusers:
    """Load a locally saved diffusers model and wrap it as an erkguid denoiser.

    Args:
        model_dir: directory written by ``model.save_pretrained`` (``config.json`` + weights),
            e.g. ``<pipeline>/unet`` or ``<pipeline>/transformer``.
        scheduler_config: a ``scheduler_config.json`` (or its directory); by default looked up next
            to the model, in ``../scheduler/`` (pipeline layout) or ``scheduler/``.
        device, torch_dtype: where and in which dtype the model runs.

    The scheduler config decides the adapter: flow-matching schedulers give a
    :class:`~erkguid.denoisers.FlowDenoiser` (t scaled by ``num_train_timesteps``); others a
    :class:`~erkguid.denoisers.VPDenoiser` with ``prediction_type`` and the DDPM betas.
    """
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("load_diffusers needs diffusers: pip install 'erkguid[diffusers]'") from e
    mdir = Path(model_dir).expanduser()
    cfg_path = mdir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"model_dir {str(mdir)!r} has no config.json (save the model with save_pretrained)")
    cls_name = read_json_object(cfg_path, what="model config").get("_class_name")
    cls = getattr(diffusers, str(cls_name), None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"model_dir {str(mdir)!r}: config.json names class {cls_name!r}, which is not a diffusers model")
    forward = getattr(cls, "forward", None)
    if forward is None or not {"timestep", "timesteps"} & set(inspect.signature(forward).parameters):
        raise ValueError(f"model_dir {str(mdir)!r} holds a {cls_name} (its forward takes no timestep), not a denoiser: "
                         "pass the folder of the pipeline's unet/ or transformer/, not its vae/ or text encoder")
    sched = read_json_object(_find_scheduler_config(mdir, scheduler_config), what="scheduler config")
    kw = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        model = cls.from_pretrained(str(mdir), local_files_only=True, **kw)
    except Exception as e:  # safetensors, torch and diffusers each raise their own types for a bad file
        raise ValueError(f"model_dir {str(mdir)!r}: cannot load the {cls_name} weights ({type(e).__name__}: {e})") from e
    model = model.to(device).eval()
    net = DiffusersNet(model)
    n_train = int(sched.get("num_train_timesteps", 1000))
    if sched.get("_class_name") in FLOW_SCHEDULERS or sched.get("prediction_type") == "flow_prediction":
        return LoadedDiffusers(FlowDenoiser(net, t_scale=float(n_train)), model, sched, "flow")
    pred = sched.get("prediction_type", "epsilon")
    schedule = DiscreteVPSchedule.from_betas(
        float(sched.get("beta_start", 1e-4)), float(sched.get("beta_end", 0.02)), n_train,
        str(sched.get("beta_schedule", "linear")), sched.get("trained_betas"),
    )
    return LoadedDiffusers(VPDenoiser(net, schedule, pred), model, sched, pred)
