"""The one entry of ``python -m circuits_pl`` and the ``circuits-pl`` console script.

``--help``, ``--version``, no command and an unknown command are answered by circuits_pl.usage without
importing torch or Lightning; only a real command imports circuits_pl.cli (and Lightning with it).
SIGINT/SIGTERM are handled from the first line to the last (:mod:`circuits_pl.signals`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from circuits_pl import signals
from circuits_pl.usage import front_door


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``circuits_pl ARGV`` (default: ``sys.argv[1:]``); return the exit status for ``sys.exit``.

    Without ``argv`` (the console script, ``python -m``) the process is circuits_pl's: its signal
    handling (:func:`circuits_pl.signals.install`) and its exit are set up. With ``argv`` (a caller in
    Python, such as a test) the caller's process is left as it was.
    """
    status = front_door(list(sys.argv[1:] if argv is None else argv))
    if status is not None:
        return status
    whole_process = argv is None
    if whole_process:
        signals.install()  # importing torch and Lightning takes seconds: a signal there exits at once
    try:
        from circuits_pl.fused import warm_up_for

        warm_up_for(list(sys.argv[1:] if argv is None else argv))  # the fused kernel compiles meanwhile, if needed
        from circuits_pl.cli import main as run_command

        if whole_process:
            signals.set_phase(signals.RUNNING)
        run_command(None if argv is None else list(argv))  # errors leave through SystemExit
    finally:
        if whole_process:
            signals.set_phase(signals.EXITING)  # a signal from here on exits at once (no atexit traceback)
            # Every file is written and closed by now. The interpreter's last collections would walk every
            # object the imports made (torch, Lightning: seconds here, the larger part of a stopped job's
            # exit); frozen, they are left to the end of the process.
            gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
