"""``python -m erkguid`` runs the command line."""

from ._console import main

main()
