"""The agent's clock: aware UTC instants, written and read as ISO 8601 with a 'Z'.

The implementation is the shared one (saveos_rules); this module names what the agent uses."""

from __future__ import annotations

from saveos_rules import iso, parse_epoch, utcnow

__all__ = ["iso", "parse_epoch", "utcnow"]
