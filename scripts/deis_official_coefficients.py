"""DEIS-tAB with our quadrature vs diff-sampler's coefficient recipe, on the same grids.

diff-sampler (used by the official ERK-Guid sampler) integrates ``L_j(tau) dsigma/dtau`` over each step with
a 10 000-point sum: the integrand at ``linspace(t_i, t_{i+1}, N)`` times ``(t_{i+1} - t_i) / N``. That recipe is
re-derived here (for comparison only; the library uses Gauss-Legendre, see erkguid.solvers.deis). Its grids end
at sigma_min with no step to 0, so the states are compared at sigma_min, against the adaptive reference
solution stopped there. Prints and writes docs/accuracy/deis_official_coefficients.json.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/deis_official_coefficients.py [--samples 256]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

import erkguid as eg
import erkguid.solvers.deis as deis
from erkguid.experiments._output import write_results
from erkguid.metrics import global_error
from erkguid.schedules import vp_fit, vp_time

NFES = (5, 7, 11, 15, 23, 31)
OURS = deis.deis_coefficients


def riemann_coefficients(sigmas: torch.Tensor, order: int, mode: str = "tab", n: int = 10_000) -> list[np.ndarray]:
    """diff-sampler's recipe (steps to sigma > 0 only; the step to 0 keeps ours, it is never compared)."""
    exact = OURS(sigmas, order, mode)
    bd, bm = vp_fit()
    s = sigmas.double().numpy()
    t = np.array([vp_time(float(v), bd, bm) for v in s])
    out = []
    for i in range(len(s) - 1):
        k = min(order, i + 1)
        if k == 1 or s[i + 1] == 0:
            out.append(exact[i])
            continue
        tau = np.linspace(t[i], t[i + 1], n)
        g = 0.5 * tau**2 * bd + tau * bm
        integrand = 0.5 * (tau * bd + bm) / np.sqrt(np.exp(-g) * -np.expm1(-g))
        nodes = t[i - k + 1 : i + 1][::-1]
        row = []
        for j in range(k):
            others = np.delete(nodes, j)
            basis = np.prod((tau[:, None] - others) / (nodes[j] - others), axis=1)
            row.append(float((integrand * basis).sum() * (t[i + 1] - t[i]) / n))
        out.append(np.array(row))
    return out


def at_sigma_min(model, x0: torch.Tensor, sig: torch.Tensor, order: int) -> torch.Tensor:
    got = {}
    n = len(sig) - 1

    def cb(info: dict[str, Any]) -> None:
        if info["i"] == n - 2:
            got["x"] = info["x"]

    eg.sample(model, x0, sig, solver="deis", solver_options={"order": order, "mode": "tab"}, callback=cb)
    return got["x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--out", default="docs/accuracy")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res: dict[str, Any] = {"samples": args.samples, "rows": []}
    for mname, shape in (("tree2d", (2,)), ("digits64", (64,))):
        model = eg.get_model(mname)
        x0 = eg.randn_from_seeds(range(args.samples), shape, sigma=80.0, dtype=torch.float64)
        ref = eg.reference_solve(model, x0, 80.0, sigma_end=0.002, rtol=1e-9, atol=1e-10).x
        for nfe in NFES:
            sig = eg.edm_sigmas(nfe + 1)  # nfe steps to sigma_min (diff-sampler's NFE), then the unused step to 0
            for order in (3, 4):
                ours_c, theirs_c = OURS(sig, order, "tab"), riemann_coefficients(sig, order)
                rel = max(float(np.max(np.abs(a - b) / np.abs(a))) for a, b in zip(ours_c[:-1], theirs_c[:-1]))
                x_ours = at_sigma_min(model, x0, sig, order)
                deis.deis_coefficients = lambda s, o, m="rhoab", lof=False: riemann_coefficients(s, o, m)  # noqa: E731
                try:
                    x_off = at_sigma_min(model, x0, sig, order)
                finally:
                    deis.deis_coefficients = OURS
                row = {"model": mname, "nfe": nfe, "order": order, "coef_max_rel_diff": rel,
                       "state_max_diff": float((x_ours - x_off).abs().max()),
                       "err_ours": float(global_error(x_ours, ref).mean()),
                       "err_official_recipe": float(global_error(x_off, ref).mean())}
                res["rows"].append(row)
                print(row, flush=True)
    for f in write_results(args.out, "deis_official_coefficients", res):
        print("wrote", f)


if __name__ == "__main__":
    main()
