"""The one exception type the CLI turns into a single stderr line and an exit code."""

from __future__ import annotations


class AgentError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# sysexits' EX_TEMPFAIL: nothing was done, try again later
EXIT_BUSY = 75


class AgentBusy(AgentError):
    """Another backup/check of this host still ran when the wait for it ran out."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message, EXIT_BUSY)
        self.holder = holder
