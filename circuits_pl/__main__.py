"""The one entry of ``python -m circuits_pl`` and the ``circuits-pl`` console script.

``--help``, no command and an unknown command are answered by circuits_pl.usage without importing
torch or Lightning; only a real command imports circuits_pl.cli (and Lightning with it).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from circuits_pl.usage import front_door


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``circuits_pl ARGV`` (default: ``sys.argv[1:]``); return the exit status for ``sys.exit``."""
    status = front_door(list(sys.argv[1:] if argv is None else argv))
    if status is not None:
        return status
    _exit_cleanly_on_signals()  # importing torch and Lightning takes seconds: nothing is written yet
    from circuits_pl.fused import warm_up_for

    warm_up_for(list(sys.argv[1:] if argv is None else argv))  # the fused kernel compiles meanwhile, if needed
    from circuits_pl.cli import main as run_command

    run_command(None if argv is None else list(argv))  # errors leave through SystemExit
    return 0


def _exit_cleanly_on_signals() -> None:
    """Until fit installs its own handlers: Ctrl-C or SIGTERM while starting exits 130/143 with one
    line (Python would print a KeyboardInterrupt traceback, or die of SIGTERM)."""
    def stop(signum: int, frame: object) -> None:
        print(f"{signal.Signals(signum).name}: interrupted outside training (starting or finishing); "
              "every file on disk is complete", file=sys.stderr)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


if __name__ == "__main__":
    sys.exit(main())
