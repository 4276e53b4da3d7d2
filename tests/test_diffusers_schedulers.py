"""Every ERK scheduler: bit-identical to its stock scheduler at w_stiff=0, equal to erkguid.sample at w_stiff>0,
state resets, save/load, pipeline reload and compatibles (tiny components built offline)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import (
    DEISMultistepScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LDMPipeline,
    UniPCMultistepScheduler,
    VQModel,
)

import erkguid
from erkguid.denoisers import DiscreteVPSchedule, FlowDenoiser, VPDenoiser
from erkguid.integrations.diffusers import (
    ERKDEISMultistepScheduler,
    ERKDPMSolverMultistepScheduler,
    ERKFlowMatchHeunDiscreteScheduler,
    ERKHeunDiscreteScheduler,
    ERKKDPM2DiscreteScheduler,
    ERKUniPCMultistepScheduler,
)

from ._helpers import sd_loop, tiny_unet

UNET = tiny_unet()
VP = [  # (stock, ERK, erkguid solver with the same pair and update, prediction types the stock step supports)
    (HeunDiscreteScheduler, ERKHeunDiscreteScheduler, "heun", ["epsilon", "v_prediction", "sample"]),
    (KDPM2DiscreteScheduler, ERKKDPM2DiscreteScheduler, "dpm2", ["epsilon", "v_prediction"]),
    (DPMSolverMultistepScheduler, ERKDPMSolverMultistepScheduler, "dpmpp_2m", ["epsilon", "v_prediction", "sample"]),
    (UniPCMultistepScheduler, ERKUniPCMultistepScheduler, "unipc", ["epsilon", "v_prediction", "sample"]),
    (DEISMultistepScheduler, ERKDEISMultistepScheduler, "deis", ["epsilon", "v_prediction", "sample"]),
]
IDS = [v[1].__name__ for v in VP]
SIGMA_KINDS = [{"use_karras_sigmas": True}, {"use_exponential_sigmas": True}, {"timestep_spacing": "trailing"}]


def _latents(n: int = 2, ch: int = 3) -> torch.Tensor:
    return erkguid.randn_from_seeds(range(n), (ch, 8, 8))


def _grid(s) -> torch.Tensor:
    """The de-duplicated EDM grid (ends in 0) of a scheduler after set_timesteps."""
    return torch.unique_consecutive(s.sigmas.double())


def _reference(erk, solver: str, prediction: str, x: torch.Tensor, w_stiff: float, quantize: bool = False) -> torch.Tensor:
    """erkguid.sample (``solver_options=erk.erk_solver_options()``) over the scheduler's grid with the UNet behind the
    VP adapter, from the state sd_loop starts at (``x * init_noise_sigma``: EDM-scaled for the two-stage schedulers,
    the VP state ``alpha x_edm`` for multistep), returned in the scheduler's variable (VP: ``alpha x_edm`` at the
    grid's last level, which DEIS ends above 0). ``quantize``: integer timesteps, as Karras grids give the UNet."""
    sig = _grid(erk)
    s0, s_end = float(sig[0]), float(sig[-1])
    x_edm = x * s0 if erk.order == 2 else x * (1 + s0 * s0) ** 0.5
    den = VPDenoiser(lambda xv, t: UNET(xv, t).sample, DiscreteVPSchedule(erk.alphas_cumprod, quantize=quantize),
                     prediction=prediction)
    with torch.no_grad():
        out = erkguid.sample(den, x_edm, sig, solver=solver, solver_options=erk.erk_solver_options(), w_stiff=w_stiff,
                             w_con=0.0)
    return out if erk.order == 2 else out / (1 + s_end * s_end) ** 0.5


@pytest.mark.parametrize(("stock", "erk", "solver", "preds"), VP, ids=IDS)
def test_strength_zero_is_bit_identical(stock, erk, solver, preds) -> None:
    x = _latents()
    cfgs = [*({"prediction_type": p} for p in preds), *SIGMA_KINDS]
    if stock is KDPM2DiscreteScheduler:  # its __init__ computes 2000 timesteps in Python (~1 s): fewer, combined configs
        cfgs = [{"prediction_type": "epsilon", "use_karras_sigmas": True}, {"prediction_type": "v_prediction", **SIGMA_KINDS[2]}]
    for cfg in cfgs:
        base = stock(**cfg)
        e = erk.from_config(base.config, w_stiff=0.0)
        assert torch.equal(sd_loop(e, UNET, x, steps=4), sd_loop(base, UNET, x, steps=4)), cfg
        assert all(float(h["correction_norm"].max()) == 0 for h in e.erk_history)


@pytest.mark.parametrize(("stock", "erk", "solver", "preds"), [v for v in VP if v[2]], ids=[i for v, i in zip(VP, IDS) if v[2]])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_strength_positive_equals_erkguid_sample(stock, erk, solver, preds, prediction) -> None:
    e = erk(prediction_type=prediction, w_stiff=3.0, w_con=0.0)
    x = _latents()
    got = sd_loop(e, UNET, x, steps=5)
    plain = sd_loop(stock(prediction_type=prediction), UNET, x, steps=5)
    want = _reference(e, solver, prediction, x, 3.0)
    # float32 timestep lookup (diffusers) vs float64 (adapter): ~1e-4; the ERK effect is far larger
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    assert (got - plain).abs().max() > 20 * (got - want).abs().max()
    assert len(e.erk_history) >= 3


@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_strength_positive_equals_erkguid_sample_logrho(order) -> None:
    """Every DEIS order, with and without lower_order_final, a trailing grid and a Karras grid (which repeats its last
    sigma: that identity step is not corrected, and with lower_order_final off the de-duplicated grid is the same
    update; its timesteps are rounded) all equal erkguid.sample(solver='deis', solver_options=erk_solver_options())."""
    x = _latents()
    cfgs = [{"lower_order_final": True}, {"lower_order_final": False, "timestep_spacing": "trailing"},
            {"lower_order_final": False, "use_karras_sigmas": True}]
    for cfg in cfgs:
        e = ERKDEISMultistepScheduler(solver_order=order, w_stiff=2.0, w_con=0.0, **cfg)
        got = sd_loop(e, UNET, x, steps=6)
        assert e.erk_solver_options() == {"mode": "logrho", "order": order, "lower_order_final": cfg["lower_order_final"]}
        want = _reference(e, "deis", "epsilon", x, 2.0, quantize=bool(cfg.get("use_karras_sigmas")))
        torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
        plain = sd_loop(DEISMultistepScheduler(solver_order=order, **cfg), UNET, x, steps=6)
        assert (got - plain).abs().max() > 20 * (got - want).abs().max(), cfg
        assert len(e.erk_history) == 5 - bool(cfg.get("use_karras_sigmas"))  # steps 1-5; Karras: not the repeated one


def test_custom_timesteps_and_sigmas() -> None:
    x = _latents()
    ts = [999, 700, 400, 150, 20]  # DPMSolverMultistep takes custom timesteps
    base, e = DPMSolverMultistepScheduler(), ERKDPMSolverMultistepScheduler(w_stiff=2.0, w_con=0.0)
    assert "timesteps" in inspect.signature(e.set_timesteps).parameters  # retrieve_timesteps inspects this
    assert torch.equal(sd_loop(ERKDPMSolverMultistepScheduler(), UNET, x, timesteps=ts), sd_loop(base, UNET, x, timesteps=ts))
    got = sd_loop(e, UNET, x, timesteps=ts)
    torch.testing.assert_close(got, _reference(e, "dpmpp_2m", "epsilon", x, 2.0),
                               rtol=2e-3, atol=2e-3)
    sig = np.array([0.95, 0.8, 0.55, 0.3, 0.1])  # UniPC takes custom sigmas for flow models (velocity prediction)
    flow = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
    base, e = UniPCMultistepScheduler(**flow), ERKUniPCMultistepScheduler(**flow, w_stiff=2.0, w_con=0.0)
    assert "sigmas" in inspect.signature(e.set_timesteps).parameters
    assert torch.equal(sd_loop(ERKUniPCMultistepScheduler(**flow), UNET, x, sigmas=sig), sd_loop(base, UNET, x, sigmas=sig))
    got = sd_loop(e, UNET, x, sigmas=sig)
    t = _grid(e)
    assert torch.allclose(t[:-1].float(), torch.tensor(sig, dtype=torch.float32)) and t[-1] == 0
    den = FlowDenoiser(lambda xt, tt: UNET(xt, tt).sample, t_scale=1000)  # EDM sigma = t / (1 - t), x = x_t / (1 - t)
    with torch.no_grad():
        want = erkguid.sample(den, x / (1 - t[0]), t / (1 - t), solver="unipc", w_stiff=2.0, w_con=0.0)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    assert (got - sd_loop(base, UNET, x, sigmas=sig)).abs().max() > 20 * (got - want).abs().max()


@pytest.mark.parametrize(("stock", "erk", "solver", "preds"), VP, ids=IDS)
def test_img2img_begin_index_and_no_state_leak(stock, erk, solver, preds) -> None:
    image, noise = 0.5 * _latents(), _latents()
    begin = 2 * stock.order  # a whole number of solver steps into a 5-step run
    want = sd_loop(stock(), UNET, noise, steps=5, begin=begin, image=image)
    assert torch.equal(sd_loop(erk(w_stiff=0.0), UNET, noise, steps=5, begin=begin, image=image), want)
    e = erk(w_stiff=2.0, w_con=0.0)
    a = sd_loop(e, UNET, noise, steps=5, begin=begin, image=image)
    b = sd_loop(e, UNET, noise, steps=5, begin=begin, image=image)  # set_timesteps/set_begin_index clear the cache
    assert torch.equal(a, b) and not torch.equal(a, want)
    full = sd_loop(e, UNET, noise, steps=5)
    assert torch.equal(full, sd_loop(erk(w_stiff=2.0, w_con=0.0), UNET, noise, steps=5))  # fresh == reused


@pytest.mark.parametrize(("stock", "erk", "solver", "preds"), VP, ids=IDS)
def test_default_is_erkguid_recommended_at_the_runs_nfe(stock, erk, solver, preds) -> None:
    e = erk.from_config(stock().config)
    assert e.config.w_stiff is None  # saved as "recommended", re-resolved for each run's NFE
    e.set_timesteps(7)
    name = solver or e._erk_solver
    assert e.erk_setting() == erkguid.recommended(name, erkguid.get_solver(name).nfe(7))
    if e.erk_setting()["w_stiff"] == 0:  # off for this solver (multistep): the stock scheduler bit for bit
        x = _latents()
        assert torch.equal(sd_loop(e, UNET, x, steps=4), sd_loop(stock(), UNET, x, steps=4))


def test_two_stage_schedulers_refuse_an_odd_start() -> None:
    image, noise = 0.5 * _latents(), _latents()
    for erk in (ERKHeunDiscreteScheduler, ERKKDPM2DiscreteScheduler):
        with pytest.raises(ValueError, match="second-order sub-step"):
            sd_loop(erk(w_stiff=1.0), UNET, noise, steps=5, begin=3, image=image)


def test_refusals_and_validation() -> None:
    e = ERKDPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", w_stiff=1.0)
    with pytest.raises(ValueError, match="stochastic"):
        sd_loop(e, UNET, _latents(), steps=3)
    torch.manual_seed(0)  # at w_stiff=0 the SDE variant is the stock one, with the same noise draws
    a = sd_loop(ERKDPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"), UNET, _latents(), steps=3)
    torch.manual_seed(0)
    assert torch.equal(a, sd_loop(DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"), UNET, _latents(), steps=3))
    bads = [({"w_stiff": -1.0}, "w_stiff"), ({"w_con": float("nan")}, "w_con"), ({"erk_scaling": "cubic"}, "erk_scaling")]
    for bad, match in bads:
        for cls in (ERKUniPCMultistepScheduler, ERKFlowMatchHeunDiscreteScheduler):
            with pytest.raises(ValueError, match=match):
                cls(**bad)


ALL_ERK = [v[1] for v in VP] + [ERKFlowMatchHeunDiscreteScheduler]


@pytest.mark.parametrize("erk", ALL_ERK, ids=[c.__name__ for c in ALL_ERK])
def test_save_load_round_trip(erk, tmp_path) -> None:
    kw = {"shift": 3.0} if erk is ERKFlowMatchHeunDiscreteScheduler else {"beta_start": 2e-4, "use_karras_sigmas": True}
    s = erk(w_stiff=0.75, w_con=0.25, erk_scaling="abs", **kw)
    s.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == erk.__name__ and saved["w_stiff"] == 0.75
    back = erk.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert type(back) is erk and public(back.config) == public(s.config)
    stock = erk.__mro__[[c.__module__.startswith("diffusers.") for c in erk.__mro__].index(True)]
    assert type(stock.from_config(back.config)) is stock  # and back to the stock class (ERK keys ignored)
    assert erk.from_config(stock.from_config(back.config).config).config.w_stiff == 0.75  # diffusers keeps unknown keys


def test_compatibles_list_erk_schedulers() -> None:
    names = {c.__name__ for c in HeunDiscreteScheduler().compatibles}
    assert {"ERKHeunDiscreteScheduler", "ERKDPMSolverMultistepScheduler", "ERKUniPCMultistepScheduler",
            "ERKKDPM2DiscreteScheduler", "ERKDEISMultistepScheduler", "DPMSolverMultistepScheduler"} <= names
    assert "ERKFlowMatchHeunDiscreteScheduler" not in names
    assert ERKFlowMatchHeunDiscreteScheduler in FlowMatchEulerDiscreteScheduler().compatibles
    assert {HeunDiscreteScheduler, ERKHeunDiscreteScheduler} <= set(ERKUniPCMultistepScheduler().compatibles)


def _vq() -> VQModel:
    torch.manual_seed(1)
    return VQModel(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8,), norm_num_groups=4,
                   down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), num_vq_embeddings=16).eval()


@pytest.mark.parametrize(("stock", "erk", "solver", "preds"), VP, ids=IDS)
def test_ldm_pipeline_and_reload(stock, erk, solver, preds, tmp_path) -> None:
    vq, calls = _vq(), {"n": 0}
    hook = UNET.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    try:
        images = {}
        for name, sched in [("stock", stock()), ("erk0", erk()), ("erk", erk(w_stiff=2.0, w_con=0.0))]:
            pipe = LDMPipeline(vqvae=vq, unet=UNET, scheduler=sched)
            pipe.set_progress_bar_config(disable=True)
            calls["n"] = 0
            images[name] = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                                output_type="np").images
            assert calls["n"] == (7 if stock.order == 2 else 4)  # no extra NFE for ERK-Guid
    finally:
        hook.remove()
    assert (images["stock"] == images["erk0"]).all() and not (images["stock"] == images["erk"]).all()
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["scheduler"] == ["erkguid.integrations.diffusers",
                                                                                     erk.__name__]
    back = DiffusionPipeline.from_pretrained(tmp_path)
    assert type(back) is LDMPipeline and type(back.scheduler) is erk and back.scheduler.config.w_stiff == 2.0
    passed = LDMPipeline.from_pretrained(tmp_path, scheduler=erk.from_pretrained(tmp_path, subfolder="scheduler"))
    assert type(passed.scheduler) is erk  # was: TypeError: issubclass() arg 2 must be a class


RELOAD = """
import sys, torch, erkguid
torch.set_num_threads(1)  # the test process's setting (conftest): the same kernels, so the same bits
assert "diffusers" not in sys.modules and "erkguid.integrations.diffusers" in sys.modules  # deferred stand-in
from diffusers import DiffusionPipeline, StableDiffusionPipeline
for cls in (DiffusionPipeline, StableDiffusionPipeline):
    p = cls.from_pretrained(sys.argv[1])
    p.set_progress_bar_config(disable=True)
    print(type(p).__name__, type(p.scheduler).__name__, p.scheduler.config.w_stiff, p.scheduler.config.w_con)
out = p("a cat", num_inference_steps=4, height=8, width=8, generator=torch.Generator().manual_seed(0), output_type="latent")
torch.save(out.images, sys.argv[2])
"""


def test_stable_diffusion_pipeline_strength_zero_and_reload_in_fresh_process(tmp_path) -> None:
    """Stock StableDiffusionPipeline (tiny CLIP + locally built tokenizer): ERK at w_stiff=0 equals the stock scheduler
    (with classifier-free guidance); a pipeline saved with an ERK scheduler reloads in a process that only imported erkguid."""
    pytest.importorskip("transformers", reason="the SD pipeline test needs transformers (pip install erkguid[test])")
    from ._helpers import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(DPMSolverMultistepScheduler(steps_offset=1), tmp_path / "tok")
    run = {"prompt": "a cat", "num_inference_steps": 4, "height": 8, "width": 8, "output_type": "latent"}
    cfg = pipe.scheduler.config
    for stock, erk, *_ in [*VP[:4:2], VP[4]]:  # Heun, DPM-Solver++, DEIS (the LDM test covers every scheduler)
        pipe.scheduler = stock.from_config(cfg)
        want = pipe(**run, generator=torch.Generator().manual_seed(0)).images
        pipe.scheduler = erk.from_config(cfg)
        assert torch.equal(pipe(**run, generator=torch.Generator().manual_seed(0)).images, want), erk.__name__
    pipe.scheduler = ERKDPMSolverMultistepScheduler.from_config(pipe.scheduler.config, w_stiff=1.5, w_con=0.25)
    erk_out = pipe(**run, generator=torch.Generator().manual_seed(0)).images
    pipe.save_pretrained(tmp_path / "pipe")
    res = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path / "pipe"), str(tmp_path / "out.pt")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("\n")[:2] == ["StableDiffusionPipeline ERKDPMSolverMultistepScheduler 1.5 0.25"] * 2
    assert torch.equal(torch.load(tmp_path / "out.pt"), erk_out)


# ---------------------------------------------------------------------------------------------- flow matching
class TinyVelocity(torch.nn.Module):
    """A tiny velocity field v(x_t, t) (SD3/Flux transformers take (latents, timestep = t * 1000))."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = torch.nn.Conv2d(5, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (timestep / 1000).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:]).to(x.dtype)
        return 3 * torch.tanh(self.conv(torch.cat([x, t], 1))) - x


VEL = TinyVelocity()


@torch.no_grad()
def flow_loop(scheduler, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The SD3/Flux pipeline loop: latents start as pure noise at t = 1; step(v, t, latents)."""
    scheduler.set_timesteps(steps)
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(VEL(x, t.expand(x.shape[0])), t, x, return_dict=False)[0]
    return x


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_heun(shift: float) -> None:
    noise = erkguid.randn_from_seeds(range(2), (4, 8, 8))
    base = FlowMatchHeunDiscreteScheduler(shift=shift)
    assert torch.equal(flow_loop(ERKFlowMatchHeunDiscreteScheduler.from_config(base.config, w_stiff=0.0), noise, 5),
                       flow_loop(base, noise, 5))
    e = ERKFlowMatchHeunDiscreteScheduler(shift=shift, w_stiff=2.0, w_con=0.0)
    got = flow_loop(e, noise, 5)
    grid = _grid(e)  # flow times t, from 1 down to 0

    def den(x, t):  # the flow's own variables: D(x, t) = x - t v, so (x - D) / t = v
        return x - t.reshape(-1, 1, 1, 1).to(x.dtype) * VEL(x, t * 1000)

    with torch.no_grad():
        want = erkguid.sample(den, noise, grid, solver="heun", w_stiff=2.0, w_con=0.0)
        plain = erkguid.sample(den, noise, grid, solver="heun")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - plain).abs().max() > 50 * (got - want).abs().max()
    with pytest.raises(ValueError, match="s_churn"):
        e.set_timesteps(3)
        e.step(VEL(noise, e.timesteps[:1].expand(2)), e.timesteps[0], noise, s_churn=1.0)
