"""Report ingest like heartbeats: every snapshot, check, drill and offsite report waiting at a
moment is written in one transaction (group commit, saveos_api/lanes.py).

A report goes to the writer lane its token hashes to; a lane authenticates the whole batch
with one SELECT, takes the agents' rate-limit locks, reads the replays and the agents' counts
in one statement per kind, inserts the new rows with one multi-row INSERT ... ON CONFLICT DO
NOTHING per kind, commits, and only then answers each request (batch.py says which answer).
A replay from the agent's spool is answered with the first row's id and stores nothing.

REPORT_ROUTES answer the ordinary report (a bearer token, a body that validates) on the fast
path in front of FastAPI; the FastAPI routes (saveos_api/routes/agent.py) serve the rest with
the same writer, after FastAPI's own authentication and validation, as before.
"""

from saveos_api.reports.fastpath import REPORT_ROUTES
from saveos_api.reports.kinds import CHECKS, DRILLS, KINDS, OFFSITE, SNAPSHOTS
from saveos_api.reports.writer import ReportWriter

__all__ = ["CHECKS", "DRILLS", "KINDS", "OFFSITE", "REPORT_ROUTES", "SNAPSHOTS", "ReportWriter"]
