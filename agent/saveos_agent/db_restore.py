"""Databases out of an archive: restore one, or all (refusing to overwrite a non-empty database
unless forced). db_drill restores them into scratch databases with the same pieces.

The dump goes from `borg extract --stdout` straight into pg_restore/psql/mariadb/sqlite3
through a pipe: it never lands on disk either way.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from typing import Any, Dict, List, Optional, Tuple

from saveos_agent import borg_commands as bc
from saveos_agent import databases as dbs
from saveos_agent import dumps, execute
from saveos_agent.config import Config
from saveos_agent.errors import AgentError


def _in_archive(cfg: Config, name: str) -> str:
    return os.path.join(cfg.dump_dir, name).lstrip("/")


def manifest(cfg: Config, archive: str) -> List[Dict[str, Any]]:
    """The dumps an archive holds ([] when it holds none: a backup without databases)."""
    result = execute.run(
        bc.extract_stdout(
            cfg.repository,
            archive,
            _in_archive(cfg, dumps.MANIFEST),
            lock_wait=cfg.lock_wait_s,
            borg=cfg.borg_binary,
        ),
        execute.secrets_of(cfg),
    )
    if result.status == "error":
        raise AgentError(f"borg extract failed: {result.error_message}")
    if not result.stdout.strip():  # "never matched": borg only warns
        return []
    return dumps.read_manifest(result.stdout)


def _matches(record: Dict[str, Any], wanted: str) -> bool:
    if "/" in wanted:
        kind, name = wanted.split("/", 1)
        return record.get("type") == kind and record.get("name") == name
    return record.get("name") == wanted


def select(records: List[Dict[str, Any]], wanted: str, archive: str) -> Dict[str, Any]:
    found = [r for r in records if _matches(r, wanted)]
    if not found:
        held = ", ".join(f"{r.get('type')}/{r.get('name')}" for r in records) or "none"
        raise AgentError(f"archive {archive} holds no dump of {wanted} (it holds: {held})")
    if len(found) > 1:
        raise AgentError(
            f"{wanted} names {len(found)} dumps in {archive}: say which, e.g. "
            f"--database {found[0]['type']}/{wanted}"
        )
    record = found[0]
    if record.get("status") != "ok":
        raise AgentError(
            f"the dump of {record['type']}/{record['name']} in {archive} did not finish "
            f"({record.get('message', 'failed')}): restore it from another archive"
        )
    return record


def entry_for(cfg: Config, record: Dict[str, Any]) -> dbs.Database:
    """The declared entry a dump came from (its own name, else the `all` of its type)."""
    kind, name = record.get("type"), str(record.get("name"))
    for db in cfg.databases:
        if db.type == kind and db.name == name:
            return db
    for db in cfg.databases:
        if db.type == kind and db.name == dbs.ALL:
            return db.one(name)
    raise AgentError(
        f"no {kind} database is declared in the agent config for {name} any more: "
        "declare it (saveos_agent_databases) to say which server to restore into"
    )


def find_archive(cfg: Config, wanted: str, archives: List[str]) -> Tuple[str, Dict[str, Any]]:
    """The newest archive holding a whole dump of `wanted`."""
    for archive in reversed(archives):
        records = manifest(cfg, archive)
        with contextlib.suppress(AgentError):
            return archive, select(records, wanted, archive)
    raise AgentError(f"no archive holds a whole dump of {wanted}")


# ---- the server side ------------------------------------------------------------------------


def run_query(db: dbs.Database, database: Optional[str], sql: str, what: str) -> str:
    argv = dbs.client_argv(db, database)
    rc, out, err = dumps.run_client(db, argv, sql)
    if rc != 0:
        raise AgentError(f"{what}: {dumps.first_error(err, rc, os.path.basename(argv[0]))}")
    return out.strip()


def first_value(text: str) -> str:
    line = text.splitlines()[0] if text else ""
    return line.split("\t")[0].split("|")[0].strip()


def state_of(db: dbs.Database, target: str) -> str:
    """'absent', 'empty' or 'non-empty' (tables, views) for the target database or file."""
    if db.type == "sqlite":
        if not os.path.exists(target):
            return "absent"
        if os.path.getsize(target) == 0:
            return "empty"
        count = run_query(db, target, dbs.TABLE_COUNT["sqlite"] + ";", f"reading {target}")
        return "empty" if first_value(count) == "0" else "non-empty"
    exists = run_query(db, None, dbs.exists_sql(db, target), f"looking for database {target}")
    if first_value(exists) == "0":
        return "absent"
    count = run_query(db, target, dbs.TABLE_COUNT[db.type] + ";", f"reading database {target}")
    return "empty" if first_value(count) == "0" else "non-empty"


def create_database(db: dbs.Database, target: str) -> None:
    if db.type != "sqlite":
        run_query(db, None, dbs.create_sql(db, target), f"creating database {target}")


def drop_database(db: dbs.Database, target: str) -> None:
    if db.type == "sqlite":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        return
    run_query(db, None, dbs.drop_sql(db, target), f"dropping database {target}")


def load(cfg: Config, db: dbs.Database, archive: str, record: Dict[str, Any], target: str) -> int:
    """borg extract --stdout | loader; the loader's own error first when both fail."""
    globals_ = record.get("kind") == dbs.GLOBALS
    # Globals (CREATE ROLE ...) meet roles that exist already: psql reports those and goes on.
    if globals_:
        argv = dbs.client_argv(db, None, stop_on_error=False)
    else:
        argv = dbs.load_argv(db, record["format"], target)
    read_fd, write_fd = os.pipe()
    try:
        loader = subprocess.Popen(
            list(argv),
            stdin=read_fd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dbs.env(db),
        )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise AgentError(f"cannot run {argv[0]}: {exc.strerror}") from None
    os.close(read_fd)
    err_chunks: List[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(loader.stderr.read()), daemon=True)
    reader.start()
    try:
        result = execute.run(
            bc.extract_stdout(
                cfg.repository,
                archive,
                _in_archive(cfg, record["file"]),
                lock_wait=cfg.lock_wait_s,
                borg=cfg.borg_binary,
            ),
            execute.secrets_of(cfg),
            stdout=write_fd,
        )
    finally:
        os.close(write_fd)  # the loader sees the end of the dump
    rc = loader.wait()
    reader.join()
    loader.stderr.close()
    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    if rc != 0:
        raise AgentError(f"loading into {target}: {dumps.first_error(stderr, rc, argv[0])}")
    if result.status == "error":
        raise AgentError(f"borg extract failed: {result.error_message}")
    return int(record.get("size") or 0)


def _target(db: dbs.Database, record: Dict[str, Any], into: Optional[str]) -> str:
    if db.type == "sqlite":
        target = into or db.path or ""
        if not os.path.isabs(target):
            raise AgentError("--into for a sqlite database is the absolute path of the new file")
        return target
    return dbs.check_name(into or record["name"], "--into")


def _describe(db: dbs.Database, record: Dict[str, Any]) -> str:
    if record.get("kind") == dbs.GLOBALS:
        return "globals (roles, tablespaces)"
    return f"{db.type}/{record['name']}"


def _refusal(db: dbs.Database, target: str) -> str:
    return f"{db.type} database {target} exists and is not empty"


def _load_one(
    cfg: Config,
    archive: str,
    record: Dict[str, Any],
    db: dbs.Database,
    target: str,
    state: str,
) -> Dict[str, Any]:
    """Drop a non-empty target (the caller decided it may), create an absent one, load."""
    replaced = state == "non-empty"
    if replaced:
        drop_database(db, target)
        state = "absent"
    if state == "absent":
        create_database(db, target)
    size = load(cfg, db, archive, record, target)
    return {
        "database": record["name"],
        "type": db.type,
        "into": target,
        "size": size,
        "replaced": replaced,
    }


def restore(
    cfg: Config,
    archive: str,
    archives: List[str],
    wanted: str,
    into: Optional[str] = None,
    force: bool = False,
) -> Dict[str, Any]:
    dbs.check_wanted(wanted)
    if wanted == dbs.ALL:
        if into:
            raise AgentError(
                "--into names one database: --database all loads each dump into its own name "
                "(restore one with --database TYPE/NAME --into OTHER)"
            )
        return restore_all(cfg, archive, archives, force)
    if archive == "latest":
        archive, record = find_archive(cfg, wanted, archives)
    else:
        record = select(manifest(cfg, archive), wanted, archive)
    db = entry_for(cfg, record)
    target = _target(db, record, into)
    state = "globals" if record.get("kind") == dbs.GLOBALS else state_of(db, target)
    if state == "non-empty" and not force:
        raise AgentError(
            f"{_refusal(db, target)}: restore --into another name, or --force to drop and "
            "replace it"
        )
    done = _load_one(cfg, archive, record, db, target, state)
    message = f"restored {_describe(db, record)} from {archive} into {target}"
    return {"status": "ok", "archive": archive, **done, "message": message}


def _all_whole(records: List[Dict[str, Any]]) -> bool:
    return bool(records) and all(r.get("status") == "ok" for r in records)


def restore_all(
    cfg: Config, archive: str, archives: List[str], force: bool = False
) -> Dict[str, Any]:
    """Every dump of one archive, each into its own name: PostgreSQL globals first (the roles
    the databases' objects belong to). Checked whole before anything is loaded: a dump cut
    short, a database no longer declared or a non-empty target (without --force) refuses the
    lot, so nothing is half restored by surprise."""
    if archive == "latest":
        for name in reversed(archives):
            records = manifest(cfg, name)
            if _all_whole(records):
                archive = name
                break
        else:
            raise AgentError("no archive holds a whole dump of every database it has")
    else:
        records = manifest(cfg, archive)
    if not records:
        raise AgentError(f"archive {archive} holds no database dumps")
    broken = [r for r in records if r.get("status") != "ok"]
    if broken:
        names = ", ".join(f"{r.get('type')}/{r.get('name')}" for r in broken)
        raise AgentError(
            f"the dumps of {names} in {archive} did not finish: nothing was restored; restore "
            "the others one by one (--database TYPE/NAME), or all from another --archive"
        )
    records = sorted(records, key=lambda r: r.get("kind") != dbs.GLOBALS)  # globals first
    plan = []
    for record in records:
        db = entry_for(cfg, record)
        target = _target(db, record, None)
        globals_ = record.get("kind") == dbs.GLOBALS
        plan.append((record, db, target, "globals" if globals_ else state_of(db, target)))
    occupied = [_refusal(db, target) for _, db, target, state in plan if state == "non-empty"]
    if occupied and not force:
        raise AgentError(
            f"{'; '.join(occupied)}: nothing was restored; --force drops and replaces them, "
            "or restore each --into another name (--database TYPE/NAME)"
        )
    restored: List[Dict[str, Any]] = []
    for record, db, target, state in plan:
        try:
            restored.append(_load_one(cfg, archive, record, db, target, state))
        except AgentError as exc:
            done = ", ".join(f"{r['type']}/{r['database']}" for r in restored) or "none"
            raise AgentError(
                f"{exc.message} (restored before it: {done}; not yet: "
                f"{len(plan) - len(restored) - 1} more)"
            ) from None
    names = ", ".join(_describe(db, record) for record, db, _, _ in plan)
    return {
        "status": "ok",
        "archive": archive,
        "database": dbs.ALL,
        "restored": restored,
        "size": sum(r["size"] for r in restored),
        "replaced": any(r["replaced"] for r in restored),
        "message": f"restored {len(restored)} dumps from {archive}: {names}",
    }
