"""`saveos-agent drill`: restore a sample of unchanged files and compare them with the live ones."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Dict, List, Optional

from saveos_agent import activity, db_drill, execute
from saveos_agent import borg_commands as bc
from saveos_agent.actions.archives import latest_archive
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.execute import secrets_of
from saveos_agent.reporting import report
from saveos_agent.spool import new_report_id
from saveos_agent.state import save_state

DRILL_BATCH = 500


def _sha256(path: str) -> str:
    import hashlib  # imported where used: every agent start imports this module

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(item: Dict[str, Any], live: str) -> bool:
    """Same size and mtime as recorded in the archive (borg prints naive local time)."""
    try:
        st = os.lstat(live)
        recorded = dt.datetime.fromisoformat(str(item["mtime"]))
    except (OSError, KeyError, ValueError):
        return False
    if not os.path.isfile(live) or os.path.islink(live) or st.st_size != int(item.get("size", -1)):
        return False
    current = dt.datetime.fromtimestamp(st.st_mtime_ns // 10**9) + dt.timedelta(
        microseconds=(st.st_mtime_ns % 10**9) // 1000
    )
    if recorded.microsecond == 0:
        current = current.replace(microsecond=0)
    return abs((current - recorded).total_seconds()) < 0.000005


def drill(
    cfg: Config,
    count: Optional[int] = None,
    percent: Optional[float] = None,
    job_id: Optional[int] = None,
) -> Dict[str, Any]:
    """Restore a sample into a temp dir and compare sha256 with the unchanged live files."""
    with activity.running(cfg, "drill", job_id):
        return _drill(cfg, count, percent, job_id)


def _drill(
    cfg: Config, count: Optional[int], percent: Optional[float], job_id: Optional[int]
) -> Dict[str, Any]:
    import random  # imported where used: every agent start imports this module
    import shutil
    import tempfile

    started = utcnow()
    archive = latest_archive(cfg)
    listing = execute.run(
        bc.list_items(cfg.repository, archive, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if listing.status == "error":
        raise AgentError(f"borg list failed: {listing.error_message}")
    files = [i for i in listing.json_lines() if i.get("type") == "-"]
    eligible = [i for i in files if _unchanged(i, "/" + i["path"])]
    if percent is not None:
        size = max(1, round(len(eligible) * percent / 100.0)) if eligible else 0
    else:
        size = count if count is not None else 20
    sample = random.sample(eligible, min(size, len(eligible)))
    matched: List[str] = []
    mismatched: List[str] = []
    if sample:
        scratch = tempfile.mkdtemp(prefix="saveos-drill-")
        try:
            failures = []
            # batches keep argv well below ARG_MAX for large samples
            for start in range(0, len(sample), DRILL_BATCH):
                result = execute.run(
                    bc.extract(
                        cfg.repository,
                        archive,
                        [i["path"] for i in sample[start : start + DRILL_BATCH]],
                        lock_wait=cfg.lock_wait_s,
                        borg=cfg.borg_binary,
                    ),
                    secrets_of(cfg),
                    cwd=scratch,
                )
                if result.status == "error":
                    failures.append(result.error_message)
            for item in sample:
                restored = os.path.join(scratch, item["path"])
                try:
                    same = _sha256(restored) == _sha256("/" + item["path"])
                except OSError:
                    same = False
                (matched if same else mismatched).append("/" + item["path"])
            if failures and not mismatched:
                mismatched.append(f"extract failed: {failures[0]}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    databases = db_drill.drill(cfg, archive)  # each into a scratch database, then dropped
    finished = utcnow()
    if mismatched:
        outcome, message = "fail", f"{len(mismatched)} of {len(sample)} files differ"
    elif not sample:
        outcome, message = "fail", "no file unchanged since the archive to compare"
    else:
        outcome, message = "pass", f"{len(matched)} files identical"
    if databases:
        outcome, message = db_drill.drill_outcome(outcome, message, databases)
    body = {
        "report_id": new_report_id(),
        "archive": archive,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "files_checked": len(sample),
        "files_matched": len(matched),
        "files_mismatched": len(mismatched),
        "result": outcome,
        "message": message,
    }
    if databases:
        body["databases"] = [db_drill.drill_record(d) for d in databases]
    if job_id is not None:
        body["job_id"] = job_id
    save_state(cfg, last_drill_at=iso(finished), last_drill_result=outcome)
    sent = report(cfg, "drill", body)
    return {
        "status": "ok" if outcome == "pass" else "error",
        "result": outcome,
        "archive": archive,
        "files_in_archive": len(files),
        "files_eligible": len(eligible),
        "files_checked": len(sample),
        "files_matched": len(matched),
        "files_mismatched": len(mismatched),
        "mismatched": mismatched[:50],
        "message": message,
        **({"databases": databases} if databases else {}),
        **sent,
    }
