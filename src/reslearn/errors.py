"""Errors a user can cause and fix; the CLI prints them as one line and exits non-zero."""

import signal


class ReslearnError(Exception):
    """A user-facing error: bad input, missing data, impossible configuration, NaN loss."""

    exit_code = 2  # the CLI's exit status for this error


class RunFolderBusy(ReslearnError):
    """Another process is training in the run folder (it holds the folder's lock)."""


class Interrupted(ReslearnError):
    """Training stopped at the user's request (Ctrl-C, SIGTERM) after writing a checkpoint. Its
    exit status is a shell's for the signal: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    exit_code = 128 + signal.SIGINT

    def __init__(self, message: str, *, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
