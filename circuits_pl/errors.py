"""The exception types a user sees as a one-line message (no traceback) from the CLI."""


class CircuitsError(ValueError):
    """Bad input: the message says what was wrong and what is valid.

    ``circuits_pl.cli.main`` prints it as ``error: <message>`` and exits with status 2.
    """


class TrainingDiverged(RuntimeError):
    """Every member's loss became non-finite; the message names the step and the likely cause."""


class SaveFailed(OSError):
    """A file of the run could not be written (a full disk, a quota, permissions) while it ran: the
    message names the file and the cause and says that its previous version is intact (every write
    is atomic). ``circuits_pl.cli.main`` prints it as ``error: <message>`` and exits with status 1."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
