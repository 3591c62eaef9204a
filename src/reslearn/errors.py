"""Errors a user can cause and fix; the CLI prints them as one line and exits non-zero."""


class ReslearnError(Exception):
    """A user-facing error: bad input, missing data, impossible configuration, NaN loss."""

    exit_code = 2  # the CLI's exit status for this error


class RunFolderBusy(ReslearnError):
    """Another process is training in the run folder (it holds the folder's lock)."""


class Interrupted(ReslearnError):
    """Training stopped at the user's request (Ctrl-C) after writing a checkpoint."""

    exit_code = 130  # 128 + SIGINT, as a shell reports a process that Ctrl-C stopped
