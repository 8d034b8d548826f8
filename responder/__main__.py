"""``python3 -m responder``: see :mod:`responder.cli` (the contract is in the design)."""

import sys

from .cli import cli

if __name__ == "__main__":
    sys.exit(cli())
