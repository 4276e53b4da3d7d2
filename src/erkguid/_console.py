"""The ``erkguid`` console script: the command line, or a clear message when its extra is missing."""

from __future__ import annotations

import sys

CLI_EXTRA = ("click", "matplotlib", "PIL", "scipy")


def main() -> None:
    """Run :func:`erkguid.cli.main`; without the ``cli`` extra, say how to install it and exit 1."""
    try:
        from .cli import main as cli_main
    except ModuleNotFoundError as e:
        if e.name not in CLI_EXTRA:
            raise
        sys.stderr.write(f"erkguid: the command line needs the 'cli' extra (missing module {e.name!r}); "
                         "install it with: pip install 'erkguid[cli]'\n")
        raise SystemExit(1) from None
    cli_main()
