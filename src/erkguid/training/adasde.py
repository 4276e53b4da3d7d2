"""AdaSDE distillation (official ``training/loss.py`` + ``training_loop.py``, written fresh).

Teacher: deterministic DPM-Solver-2 on a refined grid of the same schedule with (M+1)(N-1)+1
levels (so the student's level i is the teacher's level (M+1) i), each outer interval split into
``inner`` sub-steps on an EDM rho=7 sub-grid: 2 inner (M+1)(N-1) steps, 4 (M+1)(N-1) NFE for
``inner = 2``. Student: AdaSDE from the same x_T; per step i the loss is the per-sample squared
distance to the teacher state at sigma_{i+1} (batch mean), back-propagated through the student
trajectory (the state is not detached between steps: BPTT), with one Adam step per student step
and a cosine learning-rate schedule per outer iteration (absolute floor ``lr_min``). Teacher and student
are engine runs (:class:`erkguid.Run`; the student with ``differentiable=True`` coefficients, docs/engine.md).

Pixel MSE replaces the official last-step Inception-feature loss (no downloads here);
``last_weight`` scales it. Each iteration's latents and inflation noise come from a generator
seeded by (seed, iteration), so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._batch import bdot
from .._io import atomic_write_text, read_json_object, remove_dead_temps
from ..engine import Run
from ..schedules import get_sigmas
from ..solvers.adasde_coeffs import AdaSDECoefficients

Model = Callable[..., Tensor]


@dataclass
class DistillConfig:
    """Distillation settings (defaults follow the released CIFAR-10 runs where they transfer)."""

    nfe: int = 5
    afs: bool = True
    schedule: str = "time_uniform"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    M: int = 3
    inner: int = 2
    gamma_max: float = 0.01
    gamma_min: float = 2e-4
    scale_dir: float = 0.05
    scale_time: float = 0.2
    init: str = "neutral"  # "neutral" (all raw = 0: DPM-Solver-2) or "random" (official randn)
    iters: int = 200
    batch: int = 256
    lr: float = 0.2
    lr_min: float = 0.01
    last_weight: float = 1.0
    bptt: bool = True
    seed: int = 0
    # official loop: gamma's table sits in step 0's autograd graph with a zero gradient (gamma_0 = 0), so Adam
    # still applies its momentum to gamma and advances gamma's step count at step 0; False leaves gamma out there
    official_step0_gamma: bool = False

    def check(self) -> None:
        if self.init not in ("neutral", "random"):
            raise ValueError(f"init must be 'neutral' or 'random', got {self.init!r}")
        for name in ("iters", "batch", "M", "inner"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        student_levels(self)


@dataclass
class DistillResult:
    coefficients: AdaSDECoefficients
    history: list[list[float]] = field(default_factory=list)  # per iteration, per-step losses
    seconds: float = 0.0
    teacher_nfe: int = 0


def student_levels(cfg: DistillConfig) -> Tensor:
    """The student's positive levels for ``cfg.nfe``: NFE = 2(N-1) - afs, so N = (NFE + 1 + afs) / 2."""
    if cfg.nfe < 1 or (cfg.nfe + int(cfg.afs)) % 2:
        parity = "odd" if cfg.afs else "even"
        raise ValueError(f"nfe must be a positive {parity} number with afs={cfg.afs}, got {cfg.nfe}")
    n = (cfg.nfe + int(cfg.afs)) // 2 + 1
    return get_sigmas(cfg.schedule, n, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)[:-1]


def teacher_levels(levels: Tensor, cfg: DistillConfig) -> tuple[Tensor, list[int]]:
    """The teacher's positive levels and the indices where the student's levels sit in them.

    Outer grid: the same schedule with (M+1)(N-1)+1 levels (nested: index (M+1) i is sigma_i);
    each outer interval is then cut into ``inner`` sub-steps uniform in sigma^(1/7).
    """
    n = levels.numel()
    outer = get_sigmas(cfg.schedule, (cfg.M + 1) * (n - 1) + 1, sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)[:-1]
    nested = outer[:: cfg.M + 1]
    if not torch.allclose(nested, levels, rtol=1e-9, atol=0):
        raise ValueError(f"schedule {cfg.schedule!r} does not nest the student grid in the teacher grid")
    outer[:: cfg.M + 1] = levels
    rho = 7.0
    pieces, idx = [outer[:1]], [0]
    for a, b in zip(outer[:-1].tolist(), outer[1:].tolist()):
        ramp = torch.linspace(0, 1, cfg.inner + 1, dtype=torch.float64)[1:]
        sub = (a ** (1 / rho) + ramp * (b ** (1 / rho) - a ** (1 / rho))) ** rho
        sub[-1] = b
        pieces.append(sub)
    full = torch.cat(pieces)
    idx = [i * (cfg.M + 1) * cfg.inner for i in range(n)]
    return full, idx


@torch.no_grad()
def dpm2_teacher(model: Model, x: Tensor, levels: Tensor, keep: list[int]) -> list[Tensor]:
    """Deterministic DPM-Solver-2 over ``levels``; the states at the indices ``keep``."""
    out = [x] if 0 in keep else []
    neutral = AdaSDECoefficients.neutral(levels, gamma_max=0.0, afs=False)  # r = 1/2, c = a = 1: DPM-Solver-2
    for step in Run(model, x, neutral.grid(), solver="adasde", solver_options={"coefficients": neutral}):
        if step.i + 1 in keep and step.sigma_next > 0:
            out.append(step.x)
    return out


def _lr(cfg: DistillConfig, it: int) -> float:
    lo = min(cfg.lr_min, cfg.lr)
    return lo + (cfg.lr - lo) * 0.5 * (1 + math.cos(math.pi * it / cfg.iters))


def _generator(cfg: DistillConfig, it: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + it)


def student_losses(
    model: Model, coef: AdaSDECoefficients, x: Tensor, targets: list[Tensor], gen: torch.Generator,
    step_hook: Callable[[int, Tensor], None] | None = None, bptt: bool = True,
) -> list[Tensor]:
    """Run the student from ``x`` and return the per-step losses (batch mean of per-sample squared distances).

    The student is an engine run (:class:`erkguid.Run`) with ``differentiable=True`` coefficients, so autograd
    reaches their raw tables; inflation noise comes from ``gen``; ``bptt=False`` detaches the state between steps.
    ``step_hook(i, loss_i)`` runs right after step i's loss, before step i + 1 reads the coefficients
    (training: backward + Adam step).
    """
    run = Run(model, x, coef.grid(), solver="adasde", check_finite="off", detach_state=not bptt,
              solver_options={"coefficients": coef, "differentiable": True},
              noise=lambda like: torch.randn(like.shape, generator=gen, dtype=like.dtype))
    losses = []
    for step in run:
        if step.sigma_next == 0:  # the grid's final step to 0 leaves the state as is (official denoise_to_zero=False)
            break
        diff = step.x - targets[step.i + 1]
        loss = bdot(diff, diff).mean()
        if step_hook is not None:
            step_hook(step.i, loss)
        losses.append(loss.detach())
    return losses


def evaluate_losses(model: Model, coef: AdaSDECoefficients, shape: tuple[int, ...], cfg: DistillConfig,
                    num: int = 512, seed: int = 12345) -> list[float]:
    """Per-step losses of ``coef`` against the teacher on a fixed evaluation batch (no training)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((num, *shape), generator=g, dtype=torch.float64) * cfg.sigma_max
    tl, keep = teacher_levels(coef.sigmas, cfg)
    targets = dpm2_teacher(model, x, tl, keep)
    with torch.no_grad():
        return [float(v) for v in student_losses(model, coef, x, targets, g)]


def _init(cfg: DistillConfig, levels: Tensor, meta: dict[str, Any]) -> AdaSDECoefficients:
    kw = dict(gamma_max=cfg.gamma_max, gamma_min=cfg.gamma_min, scale_dir=cfg.scale_dir, scale_time=cfg.scale_time,
              afs=cfg.afs, meta=meta)
    if cfg.init == "random":
        return AdaSDECoefficients.random(levels, seed=cfg.seed, **kw)
    return AdaSDECoefficients.neutral(levels, **kw)


def _tensor_tree(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return {"__tensor__": obj.tolist(), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, dict):
        return {str(k): _tensor_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tensor_tree(v) for v in obj]
    return obj


def _untensor_tree(obj: Any) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return torch.tensor(obj["__tensor__"], dtype=getattr(torch, obj["dtype"]))
    if isinstance(obj, dict):
        return {k: _untensor_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_untensor_tree(v) for v in obj]
    return obj


def distill_adasde(
    model: Model,
    cfg: DistillConfig,
    *,
    shape: tuple[int, ...] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 50,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
) -> DistillResult:
    """Distill AdaSDE coefficients for ``model`` (an EDM denoiser ``model(x, sigma[B])``, frozen).

    Args:
        shape: per-sample state shape (default ``model.shape``).
        checkpoint: JSON file for checkpoints (coefficients, Adam state, history, iteration).
        checkpoint_every: write the checkpoint every this many iterations (and at the end).
        resume: continue from ``checkpoint`` if it exists (its config must equal ``cfg``).
        stop_at: stop after this many iterations in total (leaves a checkpoint; for time-boxed runs).
    """
    cfg.check()
    shape = tuple(shape if shape is not None else model.shape)  # type: ignore[attr-defined]
    levels = student_levels(cfg)
    tl, keep = teacher_levels(levels, cfg)
    teacher_nfe = 2 * (tl.numel() - 1)
    coef = _init(cfg, levels, {"config": asdict(cfg), "teacher_nfe": teacher_nfe, **(meta or {})})
    params = coef.parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    history: list[list[float]] = []
    start, seconds = 0, 0.0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = read_json_object(ckpt, what="checkpoint")
        if not {"config", "coefficients", "adam", "history", "iteration", "seconds"} <= set(state):
            raise ValueError(f"checkpoint {str(ckpt)!r} is not a distillation checkpoint (entries {sorted(state)})")
        defaults = asdict(DistillConfig())  # a key missing from an older checkpoint had its default value
        diff = sorted(k for k, v in asdict(cfg).items() if state["config"].get(k, defaults[k]) != v)
        if diff:
            raise ValueError(f"checkpoint {str(ckpt)!r} was made with different settings: {diff}")
        loaded = AdaSDECoefficients.from_dict(state["coefficients"])
        with torch.no_grad():
            for p, q in zip(params, loaded.parameters()):
                p.copy_(q)
        adam = _untensor_tree(state["adam"])
        adam["state"] = {int(k): v for k, v in adam["state"].items()}  # JSON keys are strings
        opt.load_state_dict(adam)
        history, start, seconds = state["history"], state["iteration"], state["seconds"]

    def save(it: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        state = {"config": asdict(cfg), "iteration": it, "seconds": seconds, "history": history,
                 "coefficients": coef.to_dict(), "adam": _tensor_tree(opt.state_dict())}
        remove_dead_temps(ckpt)
        atomic_write_text(ckpt, json.dumps(state))  # Python's float repr: a resume reads back the exact state

    def adam_step(i: int, loss: Tensor) -> None:
        opt.zero_grad()
        weight = cfg.last_weight if i == coef.num_steps - 1 else 1.0
        (weight * loss).backward(retain_graph=cfg.bptt and i < coef.num_steps - 1)
        if cfg.official_step0_gamma and i == 0 and coef.raw["gamma"].grad is None:
            coef.raw["gamma"].grad = torch.zeros_like(coef.raw["gamma"])  # in the graph with zero gradient (official)
        for p in params:
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()

    end = cfg.iters if stop_at is None else min(stop_at, cfg.iters)
    bar = tqdm(range(start, end), disable=not progress, desc=f"distill adasde nfe={cfg.nfe}", initial=start, total=cfg.iters)
    for it in bar:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, it)
        gen = _generator(cfg, it)
        x = torch.randn((cfg.batch, *shape), generator=gen, dtype=torch.float64) * cfg.sigma_max
        targets = dpm2_teacher(model, x, tl, keep)
        losses = student_losses(model, coef, x, targets, gen, adam_step, cfg.bptt)
        history.append([float(v) for v in losses])
        seconds += time.perf_counter() - t0
        bar.set_postfix(loss=f"{history[-1][-1]:.4g}")
        if (it + 1) % checkpoint_every == 0:
            save(it + 1)
    bar.close()
    save(end)
    for p in params:
        p.requires_grad_(False)
    coef.meta.update({"iterations_done": end, "seconds": seconds, "final_losses": history[-1] if history else None})
    return DistillResult(coef, history, seconds, teacher_nfe)


# --------------------------------------------------------------------- model specs and the recorded check
def resolve_model_spec(spec: str, *, allow_pickle: bool = False) -> tuple[Model, tuple[int, ...], Any]:
    """``(denoiser, shape, true_model)`` of any model spec (:func:`erkguid.resolve.resolve_model`); ``true_model`` is the
    exact mixture the data came from (``tree2d`` for ``learned:tree2d-*``, ``digits64`` for ``learned:digits-*``) or
    ``None`` where the model has none."""
    from ..resolve import resolve_model

    m = resolve_model(spec, allow_pickle=allow_pickle)
    return m.denoiser, tuple(m.shape), m.truth


CHECK_SAMPLES, CHECK_TRUTH_SEED, CHECK_NOISE_SEED = 512, 777, 10**6


def recorded_check(spec: str, coef: AdaSDECoefficients, num: int = CHECK_SAMPLES, *, allow_pickle: bool = False
                   ) -> dict[str, Any]:
    """Sliced W2 (:func:`erkguid.metrics.sliced_wasserstein`, its fixed projections) between AdaSDE samples
    at the coefficients' grid and NFE and exact samples of the true distribution at sigma_min, on fixed seeds:
    x_T from seeds ``0..num-1`` (float64), inflation noise from seeds ``10**6 + k``, truth from seed 777."""
    from ..metrics import sliced_wasserstein
    from ..noise import randn_from_seeds
    from ..sampling import sample

    model, shape, true_model = resolve_model_spec(spec, allow_pickle=allow_pickle)
    if true_model is None:
        return {"skipped": f"model {spec!r} has no exact distribution to check against"}
    x0 = randn_from_seeds(range(num), shape, sigma=float(coef.sigmas[0]), dtype=torch.float64)
    x = sample(model, x0, coef.grid(), solver="adasde", solver_options={"coefficients": coef},
               seeds=range(CHECK_NOISE_SEED, CHECK_NOISE_SEED + num))
    sigma_min = float(coef.sigmas[-1])
    truth = true_model.sample(num, seed=CHECK_TRUTH_SEED, sigma=sigma_min, dtype=torch.float64)
    return {"sliced_w2": sliced_wasserstein(x.reshape(num, -1), truth.reshape(num, -1)), "num_samples": num,
            "x_seeds": f"0..{num - 1}", "noise_seeds": f"{CHECK_NOISE_SEED}+k", "truth": f"{true_model.name} exact samples, "
            f"seed {CHECK_TRUTH_SEED}, at sigma_min", "nfe": coef.nfe, "dtype": "float64"}
