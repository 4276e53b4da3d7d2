"""``python -m erkguid`` runs the command line."""

from .cli import main

main()
