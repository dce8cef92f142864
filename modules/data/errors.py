"""Errors about user-supplied data: the CLI reports them in one line with exit code 2."""


class DataError(ValueError):
    """A data file is missing, empty, unreadable, or lacks what the task needs."""
