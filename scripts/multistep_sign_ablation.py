"""Does the sign of the multistep ERK pair matter? Flip it (beta in {0, +1} instead of {0, -1}) and
compare the best ERK setting of a small grid, per solver, on tree2d and digits64 (256 samples).

Usage: PYTHONPATH=src python scripts/multistep_sign_ablation.py
"""

from __future__ import annotations

import dataclasses

import torch

import erkguid as eg
from erkguid.metrics import global_error
from erkguid.solvers import SOLVERS, Solver, register

NAMES = ("deis", "dpmpp_2m", "ipndm", "unipc")


NO_GUARD = {"check_divergence": False}  # the ablation records harm: the divergence guard would stop it


def flipped(name: str) -> str:
    spec = SOLVERS[name]

    def step(ctx, i, x, carry=None, **kw):
        out = spec.step(ctx, i, x, carry, **kw)
        return out if out.pair is None else out._replace(pair=dataclasses.replace(out.pair, sign=-out.pair.sign))

    register(Solver(name + "_flip", step, spec.order, spec.nfe, spec.options, setup=spec.setup))
    return name + "_flip"


def main() -> None:
    torch.set_num_threads(1)
    flips = {n: flipped(n) for n in NAMES}
    for mname, shape in (("tree2d", (2,)), ("digits64", (64,))):
        m = eg.get_model(mname)
        x0 = eg.randn_from_seeds(range(256), shape, sigma=80.0, dtype=torch.float64)
        ref = eg.reference_solve(m, x0, 80.0, rtol=1e-6, atol=1e-7).x
        for name in NAMES:
            for n in (7, 15):
                sig = eg.edm_sigmas(n)
                base = global_error(eg.sample(m, x0, sig, solver=name), ref).mean()
                line = f"{mname} {name} N={n} plain {base:.4f} |"
                for label, nm in (("sign -1", name), ("sign +1", flips[name])):
                    res = [
                        (float(global_error(eg.sample(m, x0, sig, solver=nm, w_stiff=w, w_con=c, **NO_GUARD), ref).mean()
                               / base), w, c)
                        for w in (0.05, 0.1, 0.25, 0.5, 1.0) for c in (0.0, 1.0)
                    ]
                    b = min(res)
                    line += f" {label}: best ratio {b[0]:.3f} (w={b[1]}, c={b[2]})"
                print(line, flush=True)


if __name__ == "__main__":
    main()
