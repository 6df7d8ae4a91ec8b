"""What a batch of heartbeats is made of, shared by the writer and both dialects' batches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from saveos_api.schemas import HeartbeatIn

# Trimming the bounded history on every Nth beat of an agent keeps the hot path to inserts.
TRIM_EVERY = 32
# Heartbeat fields that overwrite the agent row (the agent's own declaration wins).
AGENT_FIELDS = (
    "agent_version",
    "borg_version",
    "os",
    "hostname",
    "facts",
    "backup_interval_s",
    "heartbeat_interval_s",
    "offsite_interval_s",
)


@dataclass
class Beat:
    token: str
    body: HeartbeatIn
    future: asyncio.Future = field(repr=False)
