"""`saveos-agent backup`: borg create, prune, compact, then the snapshot report (and offsite)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional

from saveos_agent import activity, dumps, execute, hooks
from saveos_agent import borg_commands as bc
from saveos_agent.actions import offsite, worst
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.execute import secrets_of
from saveos_agent.guard import agent_guard, handle_stale_lock, lock_message
from saveos_agent.progress import JobProgress
from saveos_agent.reporting import report
from saveos_agent.spool import new_report_id
from saveos_agent.state import save_state


def archive_name(cfg: Config, moment: dt.datetime) -> str:
    stamp = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{cfg.hostname}-{stamp}Z"


def maintenance(cfg: Config) -> tuple:
    """(step, argv) to run after a good create: prune and compact, on a repository of the host's
    own. On a repository server the host appends only (retention runs there, centrally)."""
    if cfg.repository_server:
        return ()
    prune = bc.prune(
        cfg.repository,
        cfg.retention,
        glob_archives=f"{cfg.hostname}-*",
        lock_wait=cfg.lock_wait_s,
        borg=cfg.borg_binary,
    )
    compact = bc.compact(cfg.repository, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary)
    return (("prune", prune), ("compact", compact))


def repository_report(cfg: Config, used_bytes: Optional[int]) -> Dict[str, Any]:
    """The repository, for the API: its URL, server (None: this host), path, quota, use."""
    out: Dict[str, Any] = {
        "url": cfg.repository,
        "server": cfg.repository_server,
        "path": cfg.repository_path,
    }
    if cfg.quota_bytes is not None:
        out["quota_bytes"] = cfg.quota_bytes
    if isinstance(used_bytes, int) and used_bytes >= 0:
        out["used_bytes"] = used_bytes
    return out


def backup(
    cfg: Config,
    job_id: Optional[int] = None,
    trigger: str = "command line",
    wait_s: Optional[int] = None,
) -> Dict[str, Any]:
    # nested, not one parenthesized `with`: hosts may run Python 3.9
    with agent_guard(cfg, "backup", trigger, wait_s) as guard:  # noqa: SIM117
        with activity.running(cfg, "backup", job_id):
            out = _backup(cfg, job_id)
    if guard.get("waited_for"):
        out["waited_for"] = guard["waited_for"]
    return {**out, "waited_s": guard["waited_s"]}


def _backup(cfg: Config, job_id: Optional[int]) -> Dict[str, Any]:
    started = utcnow()
    save_state(cfg, last_attempt_at=iso(started))
    warnings: List[str] = []
    stale = handle_stale_lock(cfg)
    if stale:
        warnings.append(stale)
    archive = archive_name(cfg, started)
    hook_env = {"SAVEOS_ARCHIVE": archive}
    failed = hooks.run_phase(cfg.hooks, "before_backup", hook_env)
    # A job's backup tells the API how far it got while it runs (the dashboard shows it);
    # declared databases stream into the same borg create (no session without any).
    with JobProgress(cfg, job_id) as progress, dumps.for_backup(cfg) as session:
        create = execute.run(
            bc.create(
                cfg.repository,
                archive,
                compression=cfg.compression,
                checkpoint_interval=cfg.checkpoint_interval_s,
                lock_wait=cfg.lock_wait_s,
                progress=progress.enabled,
                borg=cfg.borg_binary,
                **dumps.create_options(cfg, session),
            ),
            secrets_of(cfg),
            on_progress=progress.update if progress.enabled else None,
        )
        databases = session.finish() if session else []
    failed += dumps.failures(databases) if create.status != "error" else []
    stats = {"nfiles": 0, "original_size": 0, "compressed_size": 0, "deduplicated_size": 0}
    used_bytes = None
    status, rc = create.status, create.rc
    if create.status == "error":
        archive_out = ""
        message = lock_message(cfg, create) if create.lock_timeout else create.error_message
        if create.interrupted:
            message = "backup interrupted by SIGTERM: " + message
    else:
        archive_out = archive
        data = create.json() or {}
        raw = data.get("archive", {}).get("stats", {})
        stats = {k: int(raw.get(k, 0)) for k in stats}
        # What all archives of the repository take after dedup and compression.
        used_bytes = (data.get("cache") or {}).get("stats", {}).get("unique_csize")
        warnings.extend(create.messages)
        message = "archive created"
        failed += [] if failed else hooks.run_phase(cfg.hooks, "after_backup", hook_env)
        for step, argv in maintenance(cfg):
            if failed:  # a failed dump or hook keeps the archive, but prunes nothing for it
                break
            result = execute.run(argv, secrets_of(cfg))
            if result.status != "ok":
                # the archive is safe; a failed prune/compact is a warning to look at
                status = worst(status, "warning")
                warnings.append(f"{step}: {result.error_message}")
            if result.status == "error":
                break
        if warnings:
            message = "archive created with warnings: " + "; ".join(warnings[:5])
    if failed and status != "error":
        status, message = "error", dumps.failed_message(failed, archive_out, stats["nfiles"])
    if status == "error":
        message += "".join(f"; {m}" for m in hooks.on_error(cfg.hooks, hook_env, message))
    finished = utcnow()
    duration = round((finished - started).total_seconds(), 3)
    body = {
        "report_id": new_report_id(),
        "archive": archive_out,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": duration,
        **stats,
        "exit_status": status,
        "rc": rc,
        "warnings": warnings[:50],
        "message": message[:2000],
        "repository": repository_report(cfg, used_bytes),
    }
    if databases:
        body["databases"] = [dumps.report_record(d) for d in databases]
    if job_id is not None:
        body["job_id"] = job_id
    if status == "error" and create.lock_timeout:
        body["locked"] = True  # the API shows `locked`, which break-lock may fix, not `failing`
    if status != "error":
        save_state(
            cfg, last_backup_at=iso(finished), last_archive=archive_out, last_backup_status=status
        )
    else:
        save_state(cfg, last_backup_status=status)
    sent = report(cfg, "snapshot", body)
    out = {
        "status": status,
        "rc": rc,
        "archive": archive_out,
        "stats": {**stats, "duration_s": duration},
        "report_id": sent["report_id"],
        "reported": sent["reported"],
        "message": message,
        "warnings": warnings,
    }
    if cfg.offsite and cfg.offsite.after_backup and status != "error":
        # its own report; a failed offsite copy does not make the backup fail
        out["offsite"] = offsite.sync(cfg)
    return out
