"""The one exception type the CLI turns into a single stderr line and an exit code."""

from __future__ import annotations


class AgentError(Exception):
    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
