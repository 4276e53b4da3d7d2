"""`erkguid safe-erk`: which ERK-Guid setting never makes a solver worse, measured on problems it was not chosen on.

For every solver with an embedded pair, every problem and NFE, each candidate setting (the paper's formula at the
paper's strengths, and the bounded variants of :func:`erkguid.correction.erk_guid`: the saturating scaling ``sat``
and the trust region ``trust``) is compared with the plain solver on the same per-sample-seeded noise. Accuracy is
the global error against a high-accuracy reference solve of the same model from the same noise (paired bootstrap
interval of the mean-error ratio); where the model has exact samples, sliced W2 to them is reported beside it.

Problems come in two groups: *calibration* problems, on which :data:`erkguid.recommend.RECOMMENDED` was chosen, and
*held-out* problems (mixtures of other dimension and stiffness, learned networks), on which it is only checked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._validate import sweep
from ..evaluation import Setting, evaluate
from ..metrics import ratio_ci, sliced_wasserstein
from ..models import GaussianMixture, LowRankMixture, digits_64d, isotropic_gaussian, tree_2d
from ..models.builtin import patches_16
from ..noise import randn_from_seeds
from ..recommend import ANY_NFE, NFE_BANDS, chosen_for, in_band
from ..reference import reference_solve
from ..schedules import edm_sigmas
from .bench import max_steps

SIGMA_MAX = 80.0


@dataclass(frozen=True)
class Variant:
    """One ERK-Guid setting: the keyword arguments of :func:`erkguid.sample`."""

    name: str
    w_stiff: float
    w_con: float
    scaling: str = "z2"
    trust: float | None = None

    @property
    def setting(self) -> Setting:
        return Setting(self.w_stiff, self.w_con, self.scaling, self.trust)


PAPER_TABLE5 = {"heun": 1.0, "dpm2": 1.25, "deis": 2.5}  # Table 5 strengths at w_con = 0.05 (App. B.2)


def candidates(solver: str) -> list[Variant]:
    """The paper's two defaults and the bounded variants tried for ``solver`` (a finer grid for Heun and DPM-2)."""
    w5 = PAPER_TABLE5.get(solver, 1.0)
    out = [Variant("paper (1, 0.5)", 1.0, 0.5), Variant(f"paper T5 ({w5:g}, 0.05)", w5, 0.05),
           Variant("z2 (0.5, 0.5)", 0.5, 0.5)]
    for w in (0.5, 1.0, 2.0):
        out.append(Variant(f"sat ({w:g}, 0.05)", w, 0.05, "sat"))
    for kappa in (0.25, 0.5, 1.0):
        out.append(Variant(f"trust {kappa:g} (1, 0.05)", 1.0, 0.05, "z2", kappa))
        out.append(Variant(f"sat+trust {kappa:g} (1, 0.05)", 1.0, 0.05, "sat", kappa))
    if solver == "heun":
        for w, c, kappa in ((1, 0.5, 0.5), (1, 0.5, 1), (2, 0.05, 0.5), (2, 0.05, 1), (2, 0.5, 0.5), (2, 0.5, 1)):
            out.append(Variant(f"trust {kappa:g} ({w:g}, {c:g})", w, c, "z2", kappa))
            out.append(Variant(f"sat+trust {kappa:g} ({w:g}, {c:g})", w, c, "sat", kappa))
    if solver == "dpm2":
        for w in (0.5, 0.75, 1.0):
            for c in (0.5, 1.0, 2.0):
                out.append(Variant(f"sat ({w:g}, {c:g})", w, c, "sat"))
        for kappa in (0.05, 0.1):
            out.append(Variant(f"sat+trust {kappa:g} (1, 0.05)", 1.0, 0.05, "sat", kappa))
            out.append(Variant(f"trust {kappa:g} (1, 0.05)", 1.0, 0.05, "z2", kappa))
    return out


@dataclass
class SafeProblem:
    name: str
    group: str  # "calibration" or "held-out"
    denoiser: Callable[..., Tensor]
    shape: tuple[int, ...]
    truth: GaussianMixture | LowRankMixture | None = None
    labels: int = 0  # class-conditional networks: labels = seed % labels


def random_mixture(dim: int, k: int, lo: float, hi: float, seed: int, name: str) -> GaussianMixture:
    """A mixture with ``k`` components whose covariance eigenvalues are log-uniform in [lo, hi] (its stiffness)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(k):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        lam = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(dim, generator=g, dtype=torch.float64))
        covs.append(q @ torch.diag(lam) @ q.T)
    return GaussianMixture(torch.rand(k, generator=g, dtype=torch.float64) + 0.5, means, torch.stack(covs), name=name)


def problems(names: Sequence[str] | None = None) -> list[SafeProblem]:
    from ..learned import load_learned

    makers: dict[str, Callable[[], SafeProblem]] = {
        "tree2d": lambda: SafeProblem("tree2d", "calibration", (m := tree_2d()), tuple(m.shape), m),
        "digits64": lambda: SafeProblem("digits64", "calibration", (m := digits_64d()), tuple(m.shape), m),
        "gauss16": lambda: SafeProblem("gauss16", "held-out", (m := isotropic_gaussian(16)), tuple(m.shape), m),
        "mix8-stiff": lambda: SafeProblem("mix8-stiff", "held-out",
                                          (m := random_mixture(8, 16, 1e-4, 0.3, 11, "mix8-stiff")), tuple(m.shape), m),
        "mix32": lambda: SafeProblem("mix32", "held-out", (m := random_mixture(32, 8, 1e-3, 1.0, 12, "mix32")),
                                     tuple(m.shape), m),
        "patches16": lambda: SafeProblem("patches16", "held-out", (m := patches_16()), tuple(m.shape), m),
        "learned-tree2d": lambda: SafeProblem("learned-tree2d", "held-out", (d := load_learned("tree2d-main")),
                                              tuple(d.shape), tree_2d(), d.num_classes),
        "learned-digits": lambda: SafeProblem("learned-digits", "held-out", (d := load_learned("digits-main")),
                                              tuple(d.shape), digits_64d(), d.num_classes),
    }
    return [makers[n]() for n in (names or makers)]


def _cond(p: SafeProblem, n: int) -> dict[str, Any]:
    return {"class_labels": torch.arange(n) % p.labels} if p.labels else {}


def _run_cell(p: SafeProblem, x0: Tensor, grid: Tensor, solver: str, setting: Setting, cond: dict[str, Any],
              ref: Tensor, truth: Tensor | None) -> tuple[Tensor, float | None]:
    """Per-sample global errors of one run (:func:`erkguid.evaluation.evaluate`), and its sliced W2 to exact samples
    (if any). The divergence guard is off: these runs record the harm a setting does."""
    run = evaluate(p.denoiser, x0, grid, ref, solver=solver, setting=setting, extra_args=cond, check_divergence=False)
    n = run.x.shape[0]
    sw = None if truth is None else sliced_wasserstein(run.x.reshape(n, -1), truth.reshape(n, -1))
    return run.err, sw


@sweep
def run_safe(problem_names: Sequence[str] | None = None,
             solvers: Sequence[str] = ("heun", "dpm2", "dpmpp_2m", "dpmpp_3m", "deis", "lms", "ipndm", "unipc"),
             nfes: Sequence[int] = (5, 7, 11, 15, 23, 31), num_samples: int = 256,
             variants: Callable[[str], list[Variant]] = candidates, progress: bool = True) -> dict[str, Any]:
    """Every (problem, solver, NFE, variant) against the plain solver; returns rows for JSON."""
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for p in problems(problem_names):
        x0 = randn_from_seeds(range(num_samples), p.shape, sigma=SIGMA_MAX, dtype=torch.float64)
        cond = _cond(p, num_samples)
        ref = reference_solve(p.denoiser, x0, SIGMA_MAX, rtol=1e-7, atol=1e-8, **cond).x
        truth = None if p.truth is None or p.labels else p.truth.sample(num_samples, seed=777, dtype=torch.float64)
        jobs = [(s, n) for s in solvers for n in nfes if (max_steps(s, n) or 0) >= 2]
        for solver, nfe in tqdm(jobs, disable=not progress, desc=f"safe-erk {p.name}", leave=False):
            steps = max_steps(solver, nfe)
            assert steps is not None
            grid = edm_sigmas(steps, sigma_max=SIGMA_MAX)

            cell = (p, x0, grid, solver)
            e0, sw0 = _run_cell(*cell, Setting(), cond, ref, truth)
            rows.append({"problem": p.name, "group": p.group, "solver": solver, "nfe": nfe, "steps": steps,
                         "variant": "plain", "err_mean": float(e0.mean()), "ratio": 1.0, "ratio_lo": 1.0, "ratio_hi": 1.0,
                         "sliced_w2": sw0, "finite": True})
            for v in variants(solver):
                try:
                    e, sw = _run_cell(*cell, v.setting, cond, ref, truth)
                    r, lo, hi = ratio_ci(e, e0)
                    finite = bool(torch.isfinite(e).all())
                except FloatingPointError:  # the state overflowed: the setting diverged
                    r, lo, hi, sw, finite, e = math.inf, math.inf, math.inf, None, False, torch.full_like(e0, math.inf)
                rows.append({"problem": p.name, "group": p.group, "solver": solver, "nfe": nfe, "steps": steps,
                             "variant": v.name, **{k: val for k, val in asdict(v).items() if k != "name"},
                             "err_mean": float(e.mean()), "ratio": r, "ratio_lo": lo, "ratio_hi": hi, "sliced_w2": sw,
                             "finite": finite})
    return {"rows": rows, "num_samples": num_samples, "nfes": list(nfes), "solvers": list(solvers),
            "seconds": time.time() - t0}


def _setting(row: dict[str, Any]) -> dict[str, Any]:
    return {"w_stiff": row["w_stiff"], "w_con": row["w_con"], "scaling": row["scaling"], "trust": row["trust"]}


def _safe(rs: Sequence[dict[str, Any]]) -> bool:
    return all(r["finite"] and r["ratio_lo"] <= 1.0 for r in rs)


def select_recommended(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rule behind :data:`erkguid.recommend.RECOMMENDED`, applied to ``run_safe`` rows.

    Per solver, for each NFE band of :data:`NFE_BANDS` and for "any NFE" (all bands at once): among the variants
    that were finite and never worse than the plain solver beyond the paired 95% interval (``ratio_lo <= 1``) on
    every *calibration* problem and NFE of the band, take the one with the lowest geometric-mean error ratio. The
    choice is then checked on the *held-out* problems of the band; if it is worse anywhere there, or does not lower
    the mean, the band gets no entry (ERK-Guid off). Returns ``{solver: [{"nfe": [lo, hi], **setting}, ...]}`` with
    the any-NFE entry first.
    """
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["variant"] != "plain":
            by.setdefault((r["solver"], r["variant"]), []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for solver in sorted({s for s, _ in by}):
        for band in (ANY_NFE, *NFE_BANDS):
            best: tuple[float, str] | None = None
            for (s, variant), rs in by.items():
                cal = [r for r in rs if s == solver and r["group"] == "calibration" and in_band(band, r["nfe"])]
                if not cal or not _safe(cal):
                    continue
                score = sum(math.log(r["ratio"]) for r in cal) / len(cal)
                if score < 0 and (best is None or score < best[0]):
                    best = (score, variant)
            if best is None:
                continue
            held = [r for r in by[(solver, best[1])] if r["group"] == "held-out" and in_band(band, r["nfe"])]
            if _safe(held):
                out.setdefault(solver, []).append({"nfe": list(band), **_setting(by[(solver, best[1])][0])})
    return out


def recommended_rows(rows: Sequence[dict[str, Any]], chosen: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every (problem, solver, NFE): the plain solver's error and sliced W2 beside the recommended setting's."""
    plain = {(r["problem"], r["solver"], r["nfe"]): r for r in rows if r["variant"] == "plain"}
    best: dict[tuple[str, str, int], float] = {}
    for r in rows:
        k = (r["problem"], r["solver"], r["nfe"])
        best[k] = min(best.get(k, 1.0), r["ratio"])
    out = []
    for r in rows:
        k = (r["problem"], r["solver"], r["nfe"])
        if r["variant"] == "plain" or chosen_for(chosen, r["solver"], r["nfe"]) != _setting(r):
            continue
        p = plain[k]
        out.append({"problem": r["problem"], "group": r["group"], "solver": r["solver"], "nfe": r["nfe"],
                    "variant": r["variant"], "err_plain": p["err_mean"], "err": r["err_mean"], "ratio": r["ratio"],
                    "ratio_lo": r["ratio_lo"], "ratio_hi": r["ratio_hi"], "best_ratio": best[k],
                    "sw2_plain": p["sliced_w2"], "sw2": r["sliced_w2"]})
    return out


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


def format_markdown(res: dict[str, Any]) -> str:
    """The tables of docs/safe-erk.md: the chosen settings, then every cell of the recommended setting, then the
    paper's default per solver (how often it is worse)."""
    rows = res["rows"]
    chosen = select_recommended(rows)
    lines = ["## Recommended settings (`erkguid.recommended`)", "",
             "| solver | NFE | w_stiff | w_con | scaling | trust |", "|---|---|---|---|---|---|"]
    for solver in res["solvers"]:
        entries = chosen.get(solver)
        if not entries:
            lines.append(f"| {solver} | any | 0 (off) | – | – | – |")
        for e in entries or []:
            lo, hi = e["nfe"]
            band = "any" if (lo, hi) == ANY_NFE else f"{lo}–{hi if hi is not None else ''}"
            lines.append(f"| {solver} | {band} | {e['w_stiff']:g} | {e['w_con']:g} | {e['scaling']} | {_fmt(e['trust'], 'g')} |")
    rec = recommended_rows(rows, chosen)
    lines += ["", "## Summary per solver (all problems, NFE 5-31)", "",
              "kept: the share of the best tuned log-gain (per cell, over every tried setting) that the recommended "
              "setting keeps, over the cells where some setting gained > 1%.", "",
              "| solver | cells | recommended worse (95% CI) | geo-mean ratio | kept: median | kept: mean |",
              "|---|---|---|---|---|---|"]
    for solver in res["solvers"]:
        rs = [r for r in rec if r["solver"] == solver]
        if not rs:
            lines.append(f"| {solver} | – | – (off) | 1 | – | – |")
            continue
        kept = sorted(math.log(r["ratio"]) / math.log(r["best_ratio"]) for r in rs if r["best_ratio"] < 0.99)
        gm = math.exp(sum(math.log(r["ratio"]) for r in rs) / len(rs))
        med = kept[len(kept) // 2] if len(kept) % 2 else 0.5 * (kept[len(kept) // 2 - 1] + kept[len(kept) // 2])
        lines.append(f"| {solver} | {len(rs)} | {sum(r['ratio_lo'] > 1 for r in rs)} | {gm:.3f} | {med:.2f} | "
                     f"{sum(kept) / len(kept):.2f} |")
    lines += ["", "## The recommended setting (per NFE band) against the plain solver",
              "", "err: mean global error vs the reference solve; ratio: recommended / plain with its paired 95% CI; "
              "best: the lowest ratio any tried setting reached (tuned per cell, unsafe ones included); "
              "SW2: sliced W2 to exact samples (– for class-conditional networks).", "",
              "| problem | group | solver | NFE | err plain | err rec. | ratio [95% CI] | best | SW2 plain | SW2 rec. |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec:
        flag = " **worse**" if r["ratio_lo"] > 1 else ""
        lines.append(f"| {r['problem']} | {r['group']} | {r['solver']} | {r['nfe']} | {_fmt(r['err_plain'])} | "
                     f"{_fmt(r['err'])} | {r['ratio']:.3f} [{r['ratio_lo']:.3f}, {r['ratio_hi']:.3f}]{flag} | "
                     f"{r['best_ratio']:.3f} | "
                     f"{_fmt(r['sw2_plain'])} | {_fmt(r['sw2'])} |")
    lines += ["", "## Where ERK-Guid hurts: every tried setting, cells significantly worse than the plain solver", "",
              "| solver | setting | worse cells (of all problems x NFE) | worst ratio |", "|---|---|---|---|"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["variant"] != "plain":
            by.setdefault((r["solver"], r["variant"]), []).append(r)
    for (solver, variant), rs in by.items():
        worse = [r for r in rs if r["ratio_lo"] > 1 or not r["finite"]]
        lines.append(f"| {solver} | {variant} | {len(worse)} / {len(rs)} | {max(r['ratio'] for r in rs):.3g} |")
    return "\n".join(lines) + "\n"
