"""Errors about user-supplied data: the CLI reports them in one line with exit code 2."""

from __future__ import annotations

HIDDEN = "<contents not shown to UI runs>"


class DataError(ValueError):
    """A data file is missing, empty, unreadable, or lacks what the task needs.

    ``content``: the parts of the message quoted from inside a file (its column names, a
    label, a token). The CLI shows the whole message, since the user owns the file; a run
    started from a UI shows ``without_content`` (the key and file only), so a browser cannot
    read the server's files back through error messages.
    """

    def __init__(self, message: str, *content: str) -> None:
        super().__init__(message)
        hidden = message
        for part in content:  # quoted contents come after the key and file: replace the last occurrence
            head, found, tail = hidden.rpartition(part) if part else ("", "", "")
            if found:
                hidden = head + HIDDEN + tail
        self.without_content = hidden

    def __reduce__(self):  # type: ignore[no-untyped-def]  # pickles (Prefect, processes) keep both
        return (_rebuild, (type(self), str(self), self.without_content))


def _rebuild(cls: type[DataError], text: str, without_content: str) -> DataError:
    err = cls(text)
    err.without_content = without_content
    return err
