"""The ``erkguid`` command line: thin wrappers that parse, call library code, print and save."""

from __future__ import annotations

import click

from .. import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="erkguid")
def main() -> None:
    """Stiffness-aware diffusion sampling with Embedded Runge-Kutta Guidance (ERK-Guid)."""


# Each command lives in its own module and registers itself on ``main``.
from . import core  # noqa: E402,F401

from . import adasde as _adasde  # noqa: E402,F401  # isort: skip
