"""Database drills: every dump of an archive restored into a scratch database (db_restore's
load, as a restore does), the sanity query run on it, the scratch database dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets as _random
import tempfile
from typing import Any, Dict, List, Tuple

from saveos_agent import databases as dbs
from saveos_agent import db_restore as restore
from saveos_agent.config import Config
from saveos_agent.errors import AgentError

log = logging.getLogger("saveos_agent.db_drill")


def _passes(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "f", "false", "null")


def drill_one(cfg: Config, archive: str, record: Dict[str, Any]) -> Dict[str, Any]:
    out = {"type": record.get("type"), "name": record.get("name"), "size": record.get("size", 0)}
    if record.get("status") != "ok":
        return {**out, "result": "fail", "message": f"dump failed: {record.get('message')}"}
    try:
        db = restore.entry_for(cfg, record)
    except AgentError as exc:
        return {**out, "result": "fail", "message": exc.message}
    scratch_dir = None
    if db.type == "sqlite":
        scratch_dir = tempfile.mkdtemp(prefix="saveos-drill-db-")
        scratch = os.path.join(scratch_dir, "drill.sqlite")
    else:
        scratch = f"saveos_drill_{_random.token_hex(4)}_{record['name']}"[:63]
    query = dbs.sanity_query(db)
    try:
        if db.type != "sqlite":
            if restore.state_of(db, scratch) != "absent":
                raise AgentError(f"scratch database {scratch} already exists")
            restore.create_database(db, scratch)
        restore.load(cfg, db, archive, record, scratch)
        value = restore.first_value(
            restore.run_query(db, scratch, query.rstrip(";") + ";", "sanity query")
        )
    except AgentError as exc:
        return {**out, "result": "fail", "message": exc.message, "scratch": scratch}
    finally:
        try:
            restore.drop_database(db, scratch)
        except AgentError as exc:
            log.warning("could not drop scratch database %s: %s", scratch, exc.message)
        if scratch_dir:
            with contextlib.suppress(OSError):
                os.rmdir(scratch_dir)
    # The default query only reports (a database may hold no table); a declared one must hold.
    if db.drill_query and not _passes(value):
        message = f"restored, but the sanity query gave {value!r}: {query}"
        return {**out, "result": "fail", "value": value, "message": message}
    said = f"{value} tables" if not db.drill_query else f"sanity query gave {value!r}"
    return {**out, "result": "pass", "value": value, "message": f"restored; {said}"}


def drill(cfg: Config, archive: str) -> List[Dict[str, Any]]:
    """Every database dump of the archive (not the globals) through a scratch restore."""
    if not cfg.databases:
        return []
    records = restore.manifest(cfg, archive)
    return [drill_one(cfg, archive, r) for r in records if r.get("kind") != dbs.GLOBALS]


def drill_outcome(outcome: str, message: str, results: List[Dict[str, Any]]) -> Tuple[str, str]:
    """The drill's result with its databases: any database that failed fails the drill."""
    failed = [r for r in results if r["result"] != "pass"]
    passed = len(results) - len(failed)
    if failed:
        first = failed[0]
        text = f"{len(failed)} of {len(results)} databases failed ({first['type']}/" \
               f"{first['name']}: {first['message']})"  # fmt: skip
        return "fail", f"{message}; {text}"
    return outcome, f"{message}; {passed} databases restored and queried"


def drill_record(result: Dict[str, Any]) -> Dict[str, Any]:
    """What the API stores of one database drill: name, type, result, message."""
    keys = ("name", "type", "result", "message")
    return {k: str(result[k])[:1000] for k in keys if k in result}
