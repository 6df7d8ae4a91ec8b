"""`saveos-agent check`: borg check of repository and archives, reported."""

from __future__ import annotations

from typing import Any, Dict, Optional

from saveos_agent import activity, execute
from saveos_agent import borg_commands as bc
from saveos_agent.clock import iso, utcnow
from saveos_agent.config import Config
from saveos_agent.execute import secrets_of
from saveos_agent.guard import agent_guard, handle_stale_lock, lock_message
from saveos_agent.reporting import report
from saveos_agent.spool import new_report_id
from saveos_agent.state import save_state


def check(
    cfg: Config,
    verify_data: bool = False,
    job_id: Optional[int] = None,
    trigger: str = "command line",
    wait_s: Optional[int] = None,
) -> Dict[str, Any]:
    # nested, not one parenthesized `with`: hosts may run Python 3.9
    with agent_guard(cfg, "check", trigger, wait_s) as guard:  # noqa: SIM117
        with activity.running(cfg, "check", job_id):
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
        "repository": {"url": cfg.repository},
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
