"""The one exception type users see: a clear, one-line message, never a traceback."""

from __future__ import annotations


class ClipsearchError(Exception):
    """A problem with the user's input or environment that the user can fix.

    Library code words its message in the library's terms; ``parameter`` names the argument
    at fault (``"where"``, ``"model"``), so that the CLI can put the flag it came from in
    front (``error: --FLAG: ...``) and Python callers read their own parameter's name. The
    CLI prints the message on one line and exits with ``exit_code``.
    """

    exit_code: int = 2
    parameter: str | None = None

    def __init__(
        self, message: str, *, exit_code: int | None = None, parameter: str | None = None
    ) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.parameter = parameter


class NotFound(ClipsearchError):
    """Something asked for by id or name is not there (an image id, a collection)."""
