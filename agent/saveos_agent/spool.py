"""Reports are written here first (atomic, fsynced), sent oldest first, removed only after 2xx."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

from saveos_rules import write_atomically

from saveos_agent.api_client import ApiClient, ApiUnavailable

log = logging.getLogger("saveos_agent.spool")

ENDPOINTS = {
    "snapshot": "/api/v1/reports/snapshots",
    "check": "/api/v1/reports/checks",
    "drill": "/api/v1/reports/drills",
    "offsite": "/api/v1/reports/offsite",
}
# answers that will never succeed on a replay: park the report instead of blocking the queue
_PERMANENT = {400, 404, 409, 422}
WARN_RATIO = 0.9


def new_report_id() -> str:
    # uuid.uuid4().hex without importing uuid (a tenth of the agent's start-up): 16 random
    # bytes with the version-4 and RFC 4122 variant bits set
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    def __init__(self, directory: str, max_reports: int = 10000):
        self.directory = directory
        self.rejected_dir = os.path.join(directory, "rejected")
        self.max_reports = max_reports

    def _ensure(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def pending(self) -> List[str]:
        """Spooled report files, oldest first (names start with a zero-padded ns timestamp)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(
            os.path.join(self.directory, n)
            for n in names
            if n.endswith(".json") and not n.startswith(".")
        )

    def depth(self) -> int:
        return len(self.pending())

    def rejected(self) -> int:
        try:
            return len([n for n in os.listdir(self.rejected_dir) if n.endswith(".json")])
        except FileNotFoundError:
            return 0

    def add(self, path: str, body: Dict[str, Any], kind: str = "report") -> str:
        """Write one report atomically; returns the spool file path."""
        self._ensure()
        body = dict(body)
        body.setdefault("report_id", new_report_id())
        self._enforce_bound()
        name = f"{time.time_ns():020d}-{body['report_id']}.json"
        final = os.path.join(self.directory, name)
        record = {"kind": kind, "path": path, "body": body, "spooled_at": time.time()}
        write_atomically(final, json.dumps(record, sort_keys=True).encode(), 0o600)
        _fsync_dir(self.directory)
        return final

    def _enforce_bound(self) -> None:
        files = self.pending()
        if len(files) >= int(self.max_reports * WARN_RATIO):
            log.warning(
                "spool %s holds %d of at most %d reports: is the API reachable?",
                self.directory,
                len(files),
                self.max_reports,
            )
        # at the bound the oldest reports give way: the newest state matters most
        while len(files) >= self.max_reports:
            oldest = files.pop(0)
            log.error("spool full (%d): dropping oldest report %s", self.max_reports, oldest)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(oldest)

    def flush(self, client: Optional[ApiClient]) -> Dict[str, Any]:
        """Send every report oldest first; stop at the first outage so order is kept."""
        if client is None:
            return {"sent": 0, "rejected": 0, "remaining": self.depth(), "error": "no api_url"}
        with self._flush_lock():
            return self._flush(client)

    @contextlib.contextmanager
    def _flush_lock(self):
        """One flusher per spool: the daemon and a backup run by hand both flush, and two
        flushers would post the same reports and trip over each other's unlinks."""
        import fcntl

        self._ensure()
        fd = os.open(os.path.join(self.directory, ".flush.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _flush(self, client: ApiClient) -> Dict[str, Any]:
        sent = rejected = 0
        error = None
        responses: Dict[str, Any] = {}
        for file in self.pending():
            try:
                with open(file, encoding="utf-8") as fh:
                    record = json.load(fh)
                path, body = record["path"], record["body"]
            except FileNotFoundError:
                continue  # sent or parked meanwhile by a flusher that does not lock (older agent)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unreadable spool file %s (%s): parked", file, exc)
                self._park(file)
                rejected += 1
                continue
            try:
                status, answer = client.post(path, body)
            except ApiUnavailable as exc:
                error = str(exc)
                break
            if 200 <= status < 300:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file)
                _fsync_dir(self.directory)
                responses[body.get("report_id", "")] = answer
                sent += 1
            elif status in _PERMANENT:
                log.error("API refused report %s (%d): %s; parked", file, status, answer)
                self._park(file)
                rejected += 1
            else:  # 401/403/429...: keep it and retry later
                error = f"API answered {status} for {path}: {answer}"
                break
        if error:
            log.warning("spool flush stopped: %s", error)
        return {
            "sent": sent,
            "rejected": rejected,
            "remaining": self.depth(),
            "error": error,
            "responses": responses,
        }

    def _park(self, file: str) -> None:
        os.makedirs(self.rejected_dir, mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(file, os.path.join(self.rejected_dir, os.path.basename(file)))
