"""Waiting in a test for what another process does: a predicate polled until it holds."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """The predicate's first truthy value, asked every `interval` s; after `timeout` s an
    AssertionError that names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
