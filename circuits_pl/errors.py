"""The one exception type a user sees as a one-line message (no traceback) from the CLI."""


class CircuitsError(ValueError):
    """Bad input: the message says what was wrong and what is valid.

    ``circuits_pl.cli.main`` prints it as ``error: <message>`` and exits with status 2.
    """


class TrainingDiverged(RuntimeError):
    """Every member's loss became non-finite; the message names the step and the likely cause."""
