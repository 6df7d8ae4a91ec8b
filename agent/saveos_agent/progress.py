"""Live progress of a job the API handed out: the latest borg progress line, sent every few
seconds while the job runs (best effort: nothing is spooled; the final report is what counts).

A thread of its own posts, so a slow or absent API never stalls the loop that reads borg's
stderr (which would stall borg).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Optional

from saveos_agent.api_client import ApiUnavailable
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.reporting import api_client

log = logging.getLogger("saveos_agent.progress")
EVERY_S = 2.0
FIELDS = ("nfiles", "original_size", "compressed_size", "deduplicated_size")


class JobProgress:
    """`with JobProgress(cfg, job_id) as progress: execute.run(..., on_progress=progress.update)`"""

    def __init__(self, cfg: Config, job_id: Optional[int], every_s: float = EVERY_S):
        self.client = api_client(cfg) if job_id is not None else None
        self.path = f"/api/v1/jobs/{job_id}/progress"
        self.every_s = every_s
        self.latest: Optional[Dict[str, Any]] = None
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-progress", daemon=True)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def update(self, entry: Dict[str, Any]) -> None:
        body = {k: int(entry.get(k) or 0) for k in FIELDS}
        path = entry.get("path")
        if isinstance(path, str) and path:
            body["path"] = path.encode("utf-8", "replace").decode("utf-8")[-1000:]
        with self._lock:
            self.latest = body

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.every_s):
            with self._lock:
                body = self.latest
            if body is None or body == last:
                continue
            try:
                self.client.post(self.path, body)
                self.sent += 1
                last = body
            except (ApiUnavailable, AgentError) as exc:
                log.debug("progress not sent: %s", exc)

    def __enter__(self) -> "JobProgress":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join(timeout=self.every_s + 20)
