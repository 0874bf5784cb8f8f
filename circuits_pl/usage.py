"""How the user called circuits_pl, for usage lines and printed commands (no heavy imports)."""

from __future__ import annotations

import sys
from pathlib import Path


def program_name() -> str:
    """``circuits-pl`` when run through the console script, else ``python -m circuits_pl``."""
    return "circuits-pl" if Path(sys.argv[0]).name == "circuits-pl" else "python -m circuits_pl"
