"""The one exception type users see: a clear, one-line message, never a traceback."""

from __future__ import annotations


class ClipsearchError(Exception):
    """A problem with the user's input or environment that the user can fix.

    The CLI prints ``error: <message>`` on one line and exits with ``exit_code``.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
