"""AdaSDE's learned coefficients: four raw per-step tables and their output mappings.

The official "predictor" has no inputs: it is a table of raw values per step, shared by all
samples, mapped as (official ``training/networks.py``):

    r     = sigmoid(raw_r)                                    in (0, 1)
    c     = 1 + min(S_c, 0.99) tanh(raw_c / 2)                in (1 - S_c, 1 + S_c)
    a     = 1 + min(S_a, 0.99) tanh(raw_a / 2)                in (1 - S_a, 1 + S_a)
    gamma = g_min + (g_max - g_min) sigmoid((raw_g + b) / 2), b = 2 ln(0.6 / 0.4)   (raw 0 -> 0.6 of the range)

with gamma_0 = 0 (the first step is deterministic) and gamma = 0 everywhere when g_max = 0 (the
"gamma = 0 twin"). Raw = 0 everywhere with g_max = 0 is exactly DPM-Solver-2.

Saved as JSON or safetensors with metadata; never pickle. Small distilled files ship with the package
(``erkguid/data/adasde/<model>-nfe<k>.json``, made by ``scripts/ship_adasde.py`` with ``erkguid distill``):
:func:`shipped` / :func:`shipped_names` / :func:`shipped_for`, or the path form ``shipped:NAME``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._io import atomic_write_bytes, atomic_write_text, parse_json, read_json_object, to_json

KNOBS = ("r", "c", "a", "gamma")
GAMMA_BIAS = 2 * math.log(0.6 / 0.4)
FORMAT = "erkguid.adasde/1"
SHIPPED_PREFIX = "shipped:"


class AdaSDECoefficients:
    """Per-step AdaSDE coefficients for one grid of positive levels ``sigmas`` (``N`` levels, ``N - 1`` steps).

    Args:
        sigmas: the positive levels sigma_0 > ... > sigma_{N-1} (no trailing 0).
        raw: optional dict of raw float64 tensors ``[N - 1]`` for ``r``, ``c``, ``a``, ``gamma`` (zeros if absent).
        scale_dir: S_c, half-width of the direction-scale range.
        scale_time: S_a, half-width of the network-sigma-scale range.
        gamma_max: upper end of gamma; 0 switches the noise off (the deterministic twin).
        gamma_min: lower end of gamma (official HEAD: 2e-4).
        afs: analytic first step (no network call at step 0).
        meta: free-form JSON-serialisable metadata (model, schedule, training settings, losses).
    """

    def __init__(
        self,
        sigmas: Sequence[float] | Tensor,
        raw: dict[str, Tensor] | None = None,
        *,
        scale_dir: float = 0.05,
        scale_time: float = 0.2,
        gamma_max: float = 0.01,
        gamma_min: float = 2e-4,
        afs: bool = True,
        meta: dict[str, Any] | None = None,
    ) -> None:
        s = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu().flatten()
        if s.numel() < 2 or not torch.isfinite(s).all() or (s <= 0).any() or (s[1:] >= s[:-1]).any():
            raise ValueError(f"sigmas must be >= 2 positive, strictly decreasing levels (no trailing 0), got {s.tolist()}")
        for name, v in (("scale_dir", scale_dir), ("scale_time", scale_time)):
            if not 0 <= v < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {v}")
        if gamma_max != 0 and not 0 < gamma_min <= gamma_max:
            raise ValueError(f"need 0 < gamma_min <= gamma_max (or gamma_max = 0), got {gamma_min=}, {gamma_max=}")
        if gamma_max < 0:
            raise ValueError(f"gamma_max must be >= 0, got {gamma_max}")
        self.sigmas = s
        n = s.numel() - 1
        self.raw: dict[str, Tensor] = {}
        for k in KNOBS:
            given = raw is not None and k in raw
            tab = torch.as_tensor(raw[k], dtype=torch.float64) if given else torch.zeros(n, dtype=torch.float64)  # type: ignore[index]
            if tab.shape != (n,):
                raise ValueError(f"raw[{k!r}] must have shape [{n}] (one value per step), got {tuple(tab.shape)}")
            self.raw[k] = tab.detach().clone()
        unknown = set(raw or {}) - set(KNOBS)
        if unknown:
            raise ValueError(f"raw has unknown keys {sorted(unknown)}; allowed: {list(KNOBS)}")
        self.scale_dir, self.scale_time = float(scale_dir), float(scale_time)
        self.gamma_max, self.gamma_min = float(gamma_max), float(gamma_min)
        self.afs = bool(afs)
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def neutral(cls, sigmas: Sequence[float] | Tensor, **kw: Any) -> AdaSDECoefficients:
        """All raw = 0: r = 1/2, a = c = 1 (DPM-Solver-2), gamma = g_min + 0.6 (g_max - g_min) after step 0."""
        return cls(sigmas, None, **kw)

    @classmethod
    def random(cls, sigmas: Sequence[float] | Tensor, seed: int = 0, **kw: Any) -> AdaSDECoefficients:
        """The official initialisation: raw ~ N(0, 1) (one seeded generator)."""
        n = torch.as_tensor(sigmas).numel() - 1
        g = torch.Generator().manual_seed(int(seed))
        raw = {k: torch.randn(n, generator=g, dtype=torch.float64) for k in KNOBS}
        return cls(sigmas, raw, **kw)

    def config(self) -> dict[str, Any]:
        return {"scale_dir": self.scale_dir, "scale_time": self.scale_time, "gamma_max": self.gamma_max,
                "gamma_min": self.gamma_min, "afs": self.afs}

    def copy(self) -> AdaSDECoefficients:
        raw = {k: v.detach() for k, v in self.raw.items()}
        return AdaSDECoefficients(self.sigmas, raw, **self.config(), meta=dict(self.meta))

    # ------------------------------------------------------------------ values
    @property
    def num_steps(self) -> int:
        """Number of AdaSDE steps (positive levels - 1)."""
        return self.sigmas.numel() - 1

    @property
    def nfe(self) -> int:
        """Network evaluations of a full run: 2 per step, 1 for the analytic first step."""
        return 2 * self.num_steps - int(self.afs)

    def grid(self) -> Tensor:
        """The sampling grid: the positive levels, then 0 (for ``erkguid.sample``)."""
        return torch.cat([self.sigmas, self.sigmas.new_zeros(1)])

    def parameters(self) -> list[Tensor]:
        """The raw tables (set ``requires_grad`` on them to train)."""
        return [self.raw[k] for k in KNOBS]

    def values(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor | float]:
        """Mapped ``(r, c, a, gamma)`` of step ``i``, differentiable in the raw tables; gamma is 0.0 when off."""
        if not 0 <= i < self.num_steps:
            raise ValueError(f"step index i must lie in [0, {self.num_steps}), got {i}")
        r = torch.sigmoid(self.raw["r"][i])
        c = 1 + min(self.scale_dir, 0.99) * torch.tanh(self.raw["c"][i] / 2)
        a = 1 + min(self.scale_time, 0.99) * torch.tanh(self.raw["a"][i] / 2)
        gamma: Tensor | float = 0.0
        if self.gamma_max > 0 and i > 0:
            gamma = self.gamma_min + (self.gamma_max - self.gamma_min) * torch.sigmoid((self.raw["gamma"][i] + GAMMA_BIAS) / 2)
        return r, c, a, gamma

    def table(self) -> dict[str, list[float]]:
        """Mapped values per step: ``{'r': [...], 'c': [...], 'a': [...], 'gamma': [...]}``."""
        with torch.no_grad():
            rows = [[float(v) for v in self.values(i)] for i in range(self.num_steps)]
        return {k: [row[j] for row in rows] for j, k in enumerate(KNOBS)}

    def check_grid(self, grid: Tensor) -> None:
        """Raise a ValueError naming ``sigmas`` unless ``grid`` is these levels followed by 0."""
        g = torch.as_tensor(grid, dtype=torch.float64)
        ok = g.numel() == self.sigmas.numel() + 1 and g[-1] == 0 and torch.allclose(g[:-1], self.sigmas, rtol=1e-6, atol=0)
        if not ok:
            raise ValueError(
                f"sigmas {g.tolist()} do not match the grid these AdaSDE coefficients were made for "
                f"({self.sigmas.tolist()} then 0); pass sigmas=coefficients.grid()"
            )

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "sigmas": self.sigmas.tolist(),
            **self.config(),
            "nfe": self.nfe,
            "raw": {k: v.detach().tolist() for k, v in self.raw.items()},
            "mapped": self.table(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdaSDECoefficients:
        if d.get("format") != FORMAT:
            raise ValueError(f"not an AdaSDE coefficient file (format {d.get('format')!r}, expected {FORMAT!r})")
        raw = {k: torch.tensor(v, dtype=torch.float64) for k, v in d["raw"].items()}
        return cls(d["sigmas"], raw, scale_dir=d["scale_dir"], scale_time=d["scale_time"], gamma_max=d["gamma_max"],
                   gamma_min=d["gamma_min"], afs=d["afs"], meta=d.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        """Write ``.json`` (everything, human-readable) or ``.safetensors`` (raw tables + JSON metadata)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        if p.suffix == ".json":
            atomic_write_text(p, to_json(d, indent=2))
        elif p.suffix == ".safetensors":
            from safetensors.torch import save

            tensors = {f"raw.{k}": v.detach().contiguous() for k, v in self.raw.items()}
            tensors["sigmas"] = self.sigmas.contiguous()
            header = {k: v for k, v in d.items() if k not in ("raw", "sigmas")}
            atomic_write_bytes(p, save(tensors, metadata={"erkguid": to_json(header)}))
        else:
            raise ValueError(f"path must end in .json or .safetensors, got {str(p)!r}")
        return p

    @classmethod
    def load(cls, path: str | Path) -> AdaSDECoefficients:
        """Read a file written by :meth:`save`, or a shipped file as ``shipped:NAME`` (see :func:`shipped`)."""
        if isinstance(path, str) and path.startswith(SHIPPED_PREFIX):
            return shipped(path[len(SHIPPED_PREFIX):])
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"coefficients file {str(p)!r} does not exist")
        try:
            if p.suffix == ".json":
                return cls.from_dict(read_json_object(p, what="coefficients file"))
            if p.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(p), framework="pt") as fh:
                    header = parse_json((fh.metadata() or {}).get("erkguid", "{}"), f"coefficients file {p} (metadata)")
                    tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
                if not isinstance(header, dict):
                    raise ValueError("metadata 'erkguid' is not a JSON object")
                header["raw"] = {k: tensors[f"raw.{k}"].tolist() for k in KNOBS}
                header["sigmas"] = tensors["sigmas"].tolist()
                return cls.from_dict(header)
        except Exception as e:  # json, safetensors (SafetensorError), missing keys, wrong types: all name the file
            msg = str(e)
            raise ValueError(msg if str(p) in msg else f"coefficients file {p}: {type(e).__name__}: {msg}") from e
        raise ValueError(f"path must end in .json or .safetensors, got {str(p)!r}")

    def __repr__(self) -> str:
        t = self.table()
        fmt = ", ".join(f"{k}=[{', '.join(f'{v:.4g}' for v in t[k])}]" for k in KNOBS)
        return f"AdaSDECoefficients(N={self.sigmas.numel()}, nfe={self.nfe}, afs={self.afs}, {fmt})"


# --------------------------------------------------------------------- shipped files
def _shipped_dir() -> Any:
    return resources.files("erkguid.data").joinpath("adasde")


def shipped_names() -> list[str]:
    """Names of the shipped coefficient files, ``<model>-nfe<k>`` (``learned:NAME`` spelt ``learned-NAME``)."""
    d = _shipped_dir()
    if not d.is_dir():
        return []
    return sorted(f.name.removesuffix(".json") for f in d.iterdir() if f.name.endswith(".json"))


def _slug(model: str) -> str:
    return model.replace(":", "-")


def shipped(name: str) -> AdaSDECoefficients:
    """Load a shipped coefficient file by name, e.g. ``'tree2d-nfe5'`` or ``'learned:digits-main-nfe7'``.

    Each file's ``meta`` records the ``command`` that made it, the distillation ``config``, its losses
    and ``check`` (sliced W2 against exact true samples on fixed seeds; see
    :func:`erkguid.training.adasde.recorded_check`).
    """
    names = shipped_names()
    key = _slug(name).removesuffix(".json")
    if key not in names:
        raise ValueError(f"name must be one of the shipped AdaSDE coefficient files {names}, got {name!r}")
    return AdaSDECoefficients.from_dict(json.loads(_shipped_dir().joinpath(f"{key}.json").read_text()))


def shipped_for(model: str, nfe: int) -> AdaSDECoefficients | None:
    """The shipped coefficients for ``model`` (``tree2d``, ``digits64``, ``learned:tree2d-main``, ...) at
    exactly ``nfe`` network evaluations, or None when no file matches."""
    key = f"{_slug(model)}-nfe{int(nfe)}"
    return shipped(key) if key in shipped_names() else None
