"""Domain errors: each carries the one sentence the operator sees and the exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # usage or internal error
EXIT_FLEET = 2  # some hosts failed / unreachable / overdue


class SaveOSError(Exception):
    """An error the operator can act on; printed without a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, exit_code: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
