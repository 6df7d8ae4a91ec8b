"""What a batch of heartbeats is made of, shared by the writer and both dialects' batches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from saveos_api import schedule
from saveos_api.schemas import HeartbeatIn

# Trimming the bounded history on every Nth beat of an agent keeps the hot path to inserts.
TRIM_EVERY = 32
# Heartbeat fields written to the agent row, in the column COLUMN names. The agent's own
# description (versions, os, facts) wins; its intervals are kept as declared_* and make the
# effective interval only stricter than the provisioned one (saveos_api/schedule.py).
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
COLUMN = {f: f"declared_{f}" if f in schedule.INTERVALS else f for f in AGENT_FIELDS}


@dataclass
class Beat:
    token: str
    body: HeartbeatIn
    future: asyncio.Future = field(repr=False)
