"""What the agent does: each action combines argv builders, execute.run and the spool."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional

from saveos_agent import __version__, execute, job_params, locks
from saveos_agent import borg_commands as bc
from saveos_agent.api_client import ApiClient, ApiUnavailable
from saveos_agent.config import Config
from saveos_agent.errors import AgentBusy, AgentError
from saveos_agent.spool import ENDPOINTS, Spool, new_report_id

log = logging.getLogger("saveos_agent.actions")

RANK = {"ok": 0, "warning": 1, "error": 2}
DRILL_BATCH = 500
EXIT = {"ok": 0, "pass": 0, "warning": 1, "error": 2, "fail": 2}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: RANK.get(s, 2))


def secrets_of(cfg: Config) -> execute.Secrets:
    return execute.Secrets(passphrase_file=cfg.passphrase_file, passcommand=cfg.passcommand)


def api_client(cfg: Config) -> Optional[ApiClient]:
    if not cfg.api_url or not cfg.token_file:
        return None
    return ApiClient(cfg.api_url, cfg.token_file, ca_file=cfg.ca_file)


def spool_of(cfg: Config) -> Spool:
    return Spool(cfg.spool_dir, cfg.spool_max_reports)


def archive_name(cfg: Config, moment: dt.datetime) -> str:
    stamp = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{cfg.hostname}-{stamp}Z"


# ---- state ---------------------------------------------------------------------------------


def _state_path(cfg: Config) -> str:
    return os.path.join(cfg.state_dir, "state.json")


def load_state(cfg: Config) -> Dict[str, Any]:
    try:
        with open(_state_path(cfg), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_state(cfg: Config, **updates: Any) -> None:
    state = load_state(cfg)
    state.update(updates)
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    tmp = _state_path(cfg) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(state, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, _state_path(cfg))


# ---- reports -------------------------------------------------------------------------------


def report(cfg: Config, kind: str, body: Dict[str, Any]) -> Dict[str, Any]:
    """Spool first, then try to send everything spooled; says whether this report got through."""
    spool = spool_of(cfg)
    path = ENDPOINTS.get(kind) or body.pop("_path")
    spooled = spool.add(path, body, kind)
    client = api_client(cfg)
    if client is None:
        return {"report_id": body["report_id"], "reported": False}
    try:
        outcome = spool.flush(client)
    except AgentError as exc:  # unreadable token: keep the report spooled
        log.warning("report kept in spool: %s", exc.message)
        return {"report_id": body["report_id"], "reported": False}
    # Another flusher (the daemon) may have sent it while this one waited for the spool lock.
    parked = os.path.join(spool.rejected_dir, os.path.basename(spooled))
    reported = body["report_id"] in outcome["responses"] or not (
        os.path.exists(spooled) or os.path.exists(parked)
    )
    return {"report_id": body["report_id"], "reported": reported}


# ---- locks ---------------------------------------------------------------------------------


def _guard_holder(fd: int) -> Dict[str, Any]:
    """What the running action wrote into the guard file: pid, action, trigger, started_at."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: Dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another saveos-agent action is running on this host"
    return (
        f"another saveos-agent action is running on this host: a {holder.get('action', 'backup')} "
        f"({holder.get('trigger', 'unknown trigger')}), pid {holder['pid']}, "
        f"started at {holder.get('started_at', '?')}"
    )


@contextlib.contextmanager
def agent_guard(
    cfg: Config, action: str = "backup", trigger: str = "command line", wait_s: Optional[int] = None
) -> Iterator[Dict[str, Any]]:
    """One borg-writing agent action per host at a time, so a lock we judge stale is never one
    that a sibling agent process (timer backup vs daemon job) is just taking. A second action
    waits for the running one (up to `wait_s`, default busy_wait_s), then runs; past the wait it
    raises AgentBusy naming the running action. Yields how long it waited and for whom."""
    try:
        import fcntl
    except ImportError:  # not POSIX: borg's own lock is all there is
        yield {"waited_s": 0.0}
        return
    wait_s = cfg.busy_wait_s if wait_s is None else wait_s
    os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(cfg.state_dir, "agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        holder: Dict[str, Any] = {}
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                current = _guard_holder(fd)
                if execute.interrupted():
                    raise AgentError(
                        f"stopped by SIGTERM while waiting: {describe_holder(current)}"
                    ) from None
                if time.monotonic() - started >= wait_s:
                    raise AgentBusy(
                        f"{describe_holder(current)}; gave up after waiting "
                        f"busy_wait_s={wait_s} s: nothing was done, try again later",
                        current,
                    ) from None
                if current != holder:
                    holder = current
                    log.warning(
                        "%s; waiting up to %s s for it to finish", describe_holder(holder), wait_s
                    )
                time.sleep(0.2)
        mine = {
            "pid": os.getpid(),
            "action": action,
            "trigger": trigger,
            "started_at": iso(utcnow()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        waited = round(time.monotonic() - started, 1)
        yield {"waited_s": waited, **({"waited_for": holder} if holder else {})}
    finally:
        os.close(fd)  # closing releases the flock


def handle_stale_lock(cfg: Config) -> Optional[str]:
    """Break the repo lock when every holder is a dead process of this host; say what was done."""
    repo = cfg.local_repository
    if not repo or not os.path.isdir(repo):
        return None
    state = locks.state(repo)
    if state == "free":
        return None
    holders = ", ".join(h.describe() for h in locks.holders(repo))
    if state == "live":
        log.warning(
            "repository %s is locked by %s; waiting up to %ss", repo, holders, cfg.lock_wait_s
        )
        return None
    result = execute.run(bc.break_lock(cfg.repository, borg=cfg.borg_binary), secrets_of(cfg))
    if result.status == "error":
        raise AgentError(f"could not break stale lock ({holders}): {result.error_message}")
    message = f"broke stale lock left by {holders}"
    log.warning("%s", message)
    return message


def lock_message(cfg: Config, result: execute.BorgResult) -> str:
    repo = cfg.local_repository
    holders = ""
    if repo and os.path.isdir(repo):
        holders = ", ".join(h.describe() for h in locks.holders(repo))
    who = f" by {holders}" if holders else ""
    return (
        f"repository is locked{who}; gave up after lock_wait_s={cfg.lock_wait_s} "
        "(a live lock is never broken)"
    )


# ---- commands ------------------------------------------------------------------------------


def init(cfg: Config, encryption: str = "repokey-blake2") -> Dict[str, Any]:
    """Create the repository; an existing repository is reported, never re-created."""
    repo = cfg.local_repository
    if repo and os.path.exists(os.path.join(repo, "config")):
        return {"status": "ok", "created": False, "message": "repository already exists"}
    result = execute.run(bc.init(cfg.repository, encryption, borg=cfg.borg_binary), secrets_of(cfg))
    if result.status == "error":
        ids = {e.get("msgid") for e in result.logs}
        if "Repository.AlreadyExists" in ids:
            return {"status": "ok", "created": False, "message": "repository already exists"}
        raise AgentError(f"borg init failed: {result.error_message}")
    return {"status": "ok", "created": True, "message": "repository created"}


def key_export(cfg: Config, out_path: str) -> Dict[str, Any]:
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    result = execute.run(
        bc.key_export(cfg.repository, out_path, borg=cfg.borg_binary), secrets_of(cfg)
    )
    if result.status == "error":
        raise AgentError(f"borg key export failed: {result.error_message}")
    os.chmod(out_path, 0o600)
    return {"status": "ok", "path": out_path}


def backup(
    cfg: Config,
    job_id: Optional[int] = None,
    trigger: str = "command line",
    wait_s: Optional[int] = None,
) -> Dict[str, Any]:
    with agent_guard(cfg, "backup", trigger, wait_s) as guard:
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
    create = execute.run(
        bc.create(
            cfg.repository,
            archive,
            cfg.sources,
            excludes=cfg.excludes,
            compression=cfg.compression,
            checkpoint_interval=cfg.checkpoint_interval_s,
            lock_wait=cfg.lock_wait_s,
            borg=cfg.borg_binary,
        ),
        secrets_of(cfg),
    )
    stats = {"nfiles": 0, "original_size": 0, "compressed_size": 0, "deduplicated_size": 0}
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
        warnings.extend(create.messages)
        message = "archive created"
        for step, argv in (
            (
                "prune",
                bc.prune(
                    cfg.repository,
                    cfg.retention,
                    glob_archives=f"{cfg.hostname}-*",
                    lock_wait=cfg.lock_wait_s,
                    borg=cfg.borg_binary,
                ),
            ),
            (
                "compact",
                bc.compact(cfg.repository, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
            ),
        ):
            result = execute.run(argv, secrets_of(cfg))
            if result.status != "ok":
                # the archive is safe; a failed prune/compact is a warning to look at
                status = worst(status, "warning")
                warnings.append(f"{step}: {result.error_message}")
            if result.status == "error":
                break
        if warnings:
            message = "archive created with warnings: " + "; ".join(warnings[:5])
    finished = utcnow()
    duration = round((finished - started).total_seconds(), 3)
    body = {
        "report_id": new_report_id(),
        "repo": cfg.repository,
        "archive": archive_out,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": duration,
        **stats,
        "exit_status": status,
        "rc": rc,
        "warnings": warnings[:50],
        "message": message[:2000],
    }
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
        from saveos_agent import offsite

        # its own report; a failed offsite copy does not make the backup fail
        out["offsite"] = offsite.sync(cfg)
    return out


def list_archives(cfg: Config) -> Dict[str, Any]:
    result = execute.run(
        bc.list_archives(cfg.repository, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"borg list failed: {result.error_message}")
    data = result.json() or {}
    archives = [
        {"name": a.get("name"), "start": a.get("start"), "id": a.get("id")}
        for a in data.get("archives", [])
    ]
    return {"status": result.status, "repository": cfg.repository, "archives": archives}


def info(cfg: Config, archive: Optional[str] = None) -> Dict[str, Any]:
    result = execute.run(
        bc.info(cfg.repository, archive, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"borg info failed: {result.error_message}")
    return {"status": result.status, "info": result.json()}


def check(
    cfg: Config,
    verify_data: bool = False,
    job_id: Optional[int] = None,
    trigger: str = "command line",
    wait_s: Optional[int] = None,
) -> Dict[str, Any]:
    with agent_guard(cfg, "check", trigger, wait_s) as guard:
        out = _check(cfg, verify_data, job_id)
    return {**out, "waited_s": guard["waited_s"]}


def _check(cfg: Config, verify_data: bool, job_id: Optional[int]) -> Dict[str, Any]:
    started = utcnow()
    handle_stale_lock(cfg)
    result = execute.run(
        bc.check(
            cfg.repository, verify_data=verify_data, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary
        ),
        secrets_of(cfg),
    )
    finished = utcnow()
    # borg 1.2 check exits 1 when it found damage: for a check that is an error, not a warning
    outcome = "ok" if result.rc == 0 else "error"
    message = (
        "repository and archives consistent"
        if outcome == "ok"
        else "; ".join(result.messages[-5:]) or result.error_message
    )
    if result.lock_timeout:
        message = lock_message(cfg, result)
    body = {
        "report_id": new_report_id(),
        "repo": cfg.repository,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "verify_data": verify_data,
        "result": outcome,
        "rc": result.rc,
        "message": message[:2000],
    }
    if job_id is not None:
        body["job_id"] = job_id
    save_state(cfg, last_check_at=iso(finished), last_check_result=outcome)
    sent = report(cfg, "check", body)
    return {
        "status": outcome,
        "rc": result.rc,
        "verify_data": verify_data,
        "message": message,
        **sent,
    }


def _inside(path: str, parent: str) -> bool:
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def _no_symlink(target: str) -> None:
    """Refuse a target any component of which is a symlink: the restore would land wherever
    it points (a host's other user could plant one in a shared directory)."""
    current = "/"
    for part in [p for p in os.path.abspath(target).split("/") if p]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise AgentError(f"--target {target}: {current} is a symlink; give the real path")


def restore(
    cfg: Config, archive: str, paths: List[str], target: Optional[str], in_place: bool = False
) -> Dict[str, Any]:
    # Names and paths that borg could read as options are refused (job_params: the one rule).
    archive = job_params.archive_name(archive, "archive")
    paths = job_params.path_list(list(paths), "paths")
    if target is not None and not in_place:
        target = job_params.target_dir(os.path.abspath(target), "--target")
        _no_symlink(target)
    if in_place:
        if target not in (None, "/"):
            raise AgentError("--in-place restores over the source paths; do not give --target")
        target = "/"
    else:
        if not target:
            raise AgentError("restore needs --target DIR (or --in-place to overwrite the source)")
        if os.path.realpath(target) == os.path.realpath("/"):
            raise AgentError("--target / would overwrite the source; use --in-place to mean that")
        for src in cfg.sources:
            if _inside(target, src):
                raise AgentError(
                    f"--target {target} is inside source {src}; pick another directory"
                )
        if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
            raise AgentError(f"--target {target} exists and is not an empty directory")
        os.makedirs(target, mode=0o700, exist_ok=True)
        _no_symlink(target)  # again: a parent may have been swapped meanwhile
    result = execute.run(
        bc.extract(cfg.repository, archive, paths, lock_wait=cfg.lock_wait_s, borg=cfg.borg_binary),
        secrets_of(cfg),
        cwd=target,
    )
    if result.status == "error":
        raise AgentError(f"borg extract failed: {result.error_message}")
    missing = _not_in_archive(paths, target, result.messages, in_place)
    if missing:
        raise AgentError(f"not in archive {archive}: {', '.join(missing)}")
    return {
        "status": result.status,
        "archive": archive,
        "paths": list(paths),
        "target": os.path.abspath(target),
        "message": "; ".join(result.messages[-5:]) or "restored",
    }


def _not_in_archive(
    paths: List[str], target: str, messages: List[str], in_place: bool
) -> List[str]:
    """The requested paths borg found nothing for: it only warns ("Include pattern ... never
    matched") and exits 1. Into a fresh target, what did not appear there; in place, where the
    live files are, borg's own warning."""
    missing = []
    for path in paths:
        relative = path.lstrip("/")
        if in_place:
            absent = any(f"'{relative}' never matched" in m for m in messages)
        else:
            absent = not os.path.lexists(os.path.join(target, relative))
        if absent:
            missing.append(path)
    return missing


def _sha256(path: str) -> str:
    import hashlib

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


def latest_archive(cfg: Config) -> str:
    archives = [
        a["name"]
        for a in list_archives(cfg)["archives"]
        if a["name"] and not a["name"].endswith(".checkpoint")
    ]
    if not archives:
        raise AgentError("the repository has no archive yet: run a backup first")
    return archives[-1]


def drill(
    cfg: Config,
    count: Optional[int] = None,
    percent: Optional[float] = None,
    job_id: Optional[int] = None,
) -> Dict[str, Any]:
    """Restore a sample into a temp dir and compare sha256 with the unchanged live files."""
    import random
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
    finished = utcnow()
    if mismatched:
        outcome, message = "fail", f"{len(mismatched)} of {len(sample)} files differ"
    elif not sample:
        outcome, message = "fail", "no file unchanged since the archive to compare"
    else:
        outcome, message = "pass", f"{len(matched)} files identical"
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
        **sent,
    }


def flush(cfg: Config) -> Dict[str, Any]:
    spool = spool_of(cfg)
    client = api_client(cfg)
    if client is None:
        raise AgentError("no api_url in the config: nothing to flush to")
    outcome = spool.flush(client)
    outcome.pop("responses", None)
    outcome["status"] = "ok" if outcome["remaining"] == 0 else "warning"
    return outcome


def status(cfg: Config) -> Dict[str, Any]:
    spool = spool_of(cfg)
    state = load_state(cfg)
    return {
        "status": "ok",
        "agent_version": __version__,
        "borg_version": execute.borg_version(cfg.borg_binary),
        "spool_depth": spool.depth(),
        "spool_rejected": spool.rejected(),
        "spool_max_reports": cfg.spool_max_reports,
        "last_backup_at": state.get("last_backup_at"),
        "last_backup_status": state.get("last_backup_status"),
        "last_archive": state.get("last_archive"),
        "last_attempt_at": state.get("last_attempt_at"),
        "last_offsite_at": state.get("last_offsite_at"),
        "last_offsite_result": state.get("last_offsite_result"),
        "config": cfg.summary(),
    }


# ---- API: heartbeat and jobs ---------------------------------------------------------------


def heartbeat_body(cfg: Config) -> Dict[str, Any]:
    import platform
    import socket

    return {
        "agent_version": __version__,
        "borg_version": execute.borg_version(cfg.borg_binary, cfg.state_dir or None),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": socket.gethostname(),
        "backup_interval_s": cfg.backup_interval_s,
        "heartbeat_interval_s": cfg.heartbeat_interval_s,
        "facts": {"python": platform.python_version(), "spool_depth": spool_of(cfg).depth()},
        **({"offsite_interval_s": cfg.offsite.interval_s} if cfg.offsite else {}),
    }


def run_job(cfg: Config, job: Dict[str, Any]) -> Dict[str, Any]:
    """Run one queued job and spool its result (the server handed it out once)."""
    job_id, kind = job.get("id"), job.get("kind")
    log.info("running job %s (%s)", job_id, kind)
    try:
        # The API checked them too; the agent trusts neither it nor the network path.
        params = job_params.validate(kind, job.get("params"))
        if params.get("in_place") and not cfg.allow_in_place_restore_jobs:
            raise AgentError(
                "in-place restores over the API are off on this host"
                " (allow_in_place_restore_jobs in its config)"
            )
        trigger = f"API job {job_id}"
        if kind == "backup":
            result = backup(cfg, job_id=job_id, trigger=trigger)
        elif kind == "check":
            result = check(
                cfg, verify_data=bool(params.get("verify_data")), job_id=job_id, trigger=trigger
            )
        elif kind == "drill":
            result = drill(
                cfg, count=params.get("count"), percent=params.get("percent"), job_id=job_id
            )
        elif kind == "restore":
            archive = params.get("archive", "latest")
            result = restore(
                cfg,
                latest_archive(cfg) if archive == "latest" else archive,
                list(params.get("paths") or []),
                params.get("target"),
                bool(params.get("in_place")),
            )
        else:
            raise AgentError(f"unknown job kind {kind!r}")
        state = "failed" if result.get("status") == "error" else "succeeded"
    except AgentBusy as exc:
        result, state = {"status": "error", "result": "busy", "message": exc.message}, "failed"
    except AgentError as exc:
        result, state = {"status": "error", "message": exc.message}, "failed"
    body = {"report_id": new_report_id(), "state": state, "result": result, "_path": ""}
    body["_path"] = f"/api/v1/jobs/{int(job_id)}/result"
    report(cfg, "job_result", body)
    return {"id": job_id, "kind": kind, "state": state, "result": result}


def heartbeat(cfg: Config, run_jobs: bool = True) -> Dict[str, Any]:
    client = api_client(cfg)
    if client is None:
        raise AgentError("no api_url/token_file in the config: cannot heartbeat")
    try:
        status_code, answer = client.post("/api/v1/agents/heartbeat", heartbeat_body(cfg))
    except ApiUnavailable as exc:
        return {"status": "warning", "message": str(exc), "jobs": []}
    if status_code in (401, 403):
        raise AgentError(f"API refused the agent token ({status_code}): {answer}")
    if status_code >= 300:
        raise AgentError(f"heartbeat failed ({status_code}): {answer}")
    save_state(cfg, last_heartbeat_at=iso(utcnow()))
    jobs = answer.get("jobs", []) if isinstance(answer, dict) else []
    done = [run_job(cfg, job) for job in jobs] if run_jobs else []
    flushed = spool_of(cfg).flush(client)
    return {
        "status": "ok",
        "agent_id": answer.get("agent_id") if isinstance(answer, dict) else None,
        "server_time": answer.get("server_time") if isinstance(answer, dict) else None,
        "jobs": done if run_jobs else jobs,
        "spool_remaining": flushed["remaining"],
    }
