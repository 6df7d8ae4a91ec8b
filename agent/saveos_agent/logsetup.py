"""Logging for the agent: stderr for people, an optional 0600 log file, secrets always masked."""

from __future__ import annotations

import logging
import os
from typing import List, Optional

MASK = "********"
_secrets: List[str] = []


def add_secret(value: Optional[str]) -> None:
    """Register a value that must never appear in any log line (passphrase, token)."""
    if value and len(value) >= 4 and value not in _secrets:
        _secrets.append(value)
        # longest first so a secret containing another is masked whole
        _secrets.sort(key=len, reverse=True)


def mask(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class SecretMaskFilter(logging.Filter):
    """Rewrites the fully formatted message, so secrets in args or exceptions are masked too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(verbosity: int = 0, log_file: Optional[str] = None) -> None:
    root = logging.getLogger("saveos_agent")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = False
    mask_filter = SecretMaskFilter()

    stderr = logging.StreamHandler()
    stderr.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    stderr.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    stderr.addFilter(mask_filter)
    root.addHandler(stderr)

    if log_file:
        try:
            os.makedirs(os.path.dirname(log_file) or ".", mode=0o700, exist_ok=True)
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            root.warning("cannot open log file %s: %s", log_file, exc)
            return
        handler.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(mask_filter)
        root.addHandler(handler)
