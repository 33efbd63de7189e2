"""The one exception a command raises for a problem the user can fix: printed as one line, no traceback."""

from __future__ import annotations


class Failure(Exception):
    """A message for the user (what went wrong and what to do next) and the exit status."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
