"""Errors meant for users: one clear sentence each, caught once in the CLI (exit status 2)."""


class MdsegError(Exception):
    """A problem the user can fix: bad input, a missing file, an unsupported option."""


class BackendUnavailableError(MdsegError):
    """A scan backend was asked for by name but cannot run here."""
