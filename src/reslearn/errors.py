"""Errors a user can cause and fix; the CLI prints them as one line and exits non-zero."""


class ReslearnError(Exception):
    """A user-facing error: bad input, missing data, impossible configuration, NaN loss."""
