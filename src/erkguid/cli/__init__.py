"""The ``erkguid`` command line: thin wrappers that parse, call library code, print and save."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erkguid")
def main() -> None:
    """Stiffness-aware diffusion sampling with Embedded Runge-Kutta Guidance (ERK-Guid)."""


# Each command lives in its own module and registers itself on ``main``.
from . import adasde as _adasde_cli  # noqa: E402,F401
from . import bench as _bench_cli  # noqa: E402,F401
from . import core as _core_cli  # noqa: E402,F401
from . import generate as _generate_cli  # noqa: E402,F401
from . import guidance as _guidance_cli  # noqa: E402,F401
from . import learned as _learned_cli  # noqa: E402,F401
from . import profile as _profile_cli  # noqa: E402,F401
from . import reproduce as _reproduce_cli  # noqa: E402,F401
from . import safe as _safe_cli  # noqa: E402,F401
from . import tune as _tune_cli  # noqa: E402,F401
