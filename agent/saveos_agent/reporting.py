"""Reports to the API: spooled first, then everything spooled is sent (see spool.py)."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

from saveos_agent.api_client import ApiClient
from saveos_agent.config import Config
from saveos_agent.errors import AgentError
from saveos_agent.spool import ENDPOINTS, Spool

log = logging.getLogger("saveos_agent.reporting")


_CLIENTS: Dict[Tuple[str, str, Optional[str]], Tuple[Any, ApiClient]] = {}


def api_client(cfg: Config) -> Optional[ApiClient]:
    """This process's client of the API: the heartbeat, the jobs it hands out, their progress
    and every report of a run go over one kept-alive connection (one TLS handshake). A new CA
    file (a re-deploy after `saveos ca init --new-ca`) gets a new client in a running daemon."""
    if not cfg.api_url or not cfg.token_file:
        return None
    key = (cfg.api_url, cfg.token_file, cfg.ca_file)
    stamp = _stamp(cfg.ca_file)
    held = _CLIENTS.get(key)
    if held is not None and held[0] == stamp:
        return held[1]
    if held is not None:
        held[1].close()
    client = ApiClient(cfg.api_url, cfg.token_file, ca_file=cfg.ca_file)
    _CLIENTS[key] = (stamp, client)
    return client


def _stamp(path: Optional[str]) -> Any:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return st and (st.st_ino, st.st_size, st.st_mtime_ns)


def spool_of(cfg: Config) -> Spool:
    return Spool(cfg.spool_dir, cfg.spool_max_reports)


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
