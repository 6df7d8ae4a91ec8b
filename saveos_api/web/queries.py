"""The reads behind the pages, apart from how the pages look."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from saveos_rules import SEVERITY, STATUSES
from sqlalchemy.orm import Session

from saveos_api import models
from saveos_api.fleet import fleet_status
from saveos_api.jobs import agents_with_label
from saveos_api.models import (
    Agent,
    CheckResult,
    DrillResult,
    EscrowProof,
    Job,
    OffsiteSync,
    Snapshot,
)

SORTS = {
    "status": lambda a: (SEVERITY.get(a["status"], -1), a["name"]),
    "name": lambda a: a["name"],
    "last_backup": lambda a: (a["last_backup_at"] is not None, a["last_backup_at"] or 0),
    "last_heartbeat": lambda a: (a["last_heartbeat"] is not None, a["last_heartbeat"] or 0),
    "size": lambda a: a["original_size"] or 0,
}
PER_PAGE = (25, 50, 100, 200)
SUCCESS = ("ok", "warning")


class BadFilter(ValueError):
    """A fleet filter that cannot be applied; the message says which and why."""


def parse_label(label: str) -> tuple[str, str] | None:
    if not label:
        return None
    key, sep, value = label.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise BadFilter(f"label filter {label!r} is not KEY=VALUE (e.g. env=prod)")
    return key, value


def fleet_page(
    session: Session,
    at: datetime,
    *,
    q: str = "",
    statuses: list[str] = (),
    label: str = "",
    sort: str = "status",
    descending: bool = False,
    page: int = 1,
    per: int = 50,
) -> dict[str, Any]:
    """One page of the fleet table, from the same fleet_status() as GET /api/v1/fleet/status."""
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise BadFilter(f"unknown status {unknown[0]!r} (one of {', '.join(STATUSES)})")
    if sort not in SORTS:
        raise BadFilter(f"unknown sort {sort!r} (one of {', '.join(SORTS)})")
    if per not in PER_PAGE:
        raise BadFilter(f"rows per page must be one of {', '.join(map(str, PER_PAGE))}")
    wanted_label = parse_label(label)
    data = fleet_status(session, at)
    agents = data["agents"]
    if q:
        needle = q.lower()
        agents = [a for a in agents if needle in a["name"].lower()]
    if statuses:
        agents = [a for a in agents if a["status"] in statuses]
    if wanted_label:
        ids = set(agents_with_label(session, *wanted_label))
        agents = [a for a in agents if a["id"] in ids]
    agents.sort(key=SORTS[sort], reverse=descending)
    total = len(agents)
    pages = max(1, -(-total // per))
    page = min(max(1, page), pages)
    shown = agents[(page - 1) * per : page * per]
    shown_ids = [a["id"] for a in shown]
    labels = {
        row.id: row.labels
        for row in session.execute(sa.select(Agent.id, Agent.labels).where(Agent.id.in_(shown_ids)))
    }
    for agent in shown:
        agent["labels"] = labels.get(agent["id"]) or {}
    return {
        "totals": data["totals"],
        "agents": shown,
        "matched": total,
        "page": page,
        "pages": pages,
    }


def host_overview(session: Session, agent: Agent, at: datetime) -> dict[str, Any]:
    rows = fleet_status(session, at, agent_ids=[agent.id])["agents"]
    return rows[0] if rows else None


def _recent(session: Session, model, agent_id: int, limit: int) -> list:
    return list(
        session.scalars(
            sa.select(model)
            .where(model.agent_id == agent_id)
            .order_by(model.finished_at.desc(), model.id.desc())
            .limit(limit)
        )
    )


def host_history(session: Session, agent_id: int, page: int, per: int = 25) -> dict[str, Any]:
    total = session.scalar(
        sa.select(sa.func.count()).select_from(Snapshot).where(Snapshot.agent_id == agent_id)
    )
    pages = max(1, -(-total // per))
    page = min(max(1, page), pages)
    snapshots = list(
        session.scalars(
            sa.select(Snapshot)
            .where(Snapshot.agent_id == agent_id)
            .order_by(Snapshot.finished_at.desc(), Snapshot.id.desc())
            .limit(per)
            .offset((page - 1) * per)
        )
    )
    return {
        "snapshots": snapshots,
        "snapshots_total": total,
        "snapshot_page": page,
        "snapshot_pages": pages,
        "series": snapshot_series(session, agent_id),
        "checks": _recent(session, CheckResult, agent_id, 10),
        "drills": _recent(session, DrillResult, agent_id, 10),
        "offsite": _recent(session, OffsiteSync, agent_id, 10),
        "escrow": _recent(session, EscrowProof, agent_id, 10),
        "jobs": agent_jobs(session, agent_id, 20),
        "flips": status_changes(session, agent_id, 20),
    }


def status_changes(session: Session, agent_id: int, limit: int) -> list | None:
    """The agent's latest status flips (the alert evaluator's `flips`), newest first; None on a
    server without that table."""
    flip = getattr(models, "Flip", None)
    if flip is None:
        return None
    return list(
        session.scalars(
            sa.select(flip)
            .where(flip.agent_id == agent_id)
            .order_by(flip.at.desc(), flip.id.desc())
            .limit(limit)
        )
    )


def snapshot_series(session: Session, agent_id: int, limit: int = 1000) -> dict[str, list]:
    """The charts' columns, oldest first: the latest `limit` snapshots of the agent."""
    rows = session.execute(
        sa.select(
            Snapshot.finished_at,
            Snapshot.original_size,
            Snapshot.deduplicated_size,
            Snapshot.duration_s,
            Snapshot.exit_status,
        )
        .where(Snapshot.agent_id == agent_id)
        .order_by(Snapshot.finished_at.desc(), Snapshot.id.desc())
        .limit(limit)
    ).all()
    rows.reverse()
    return {
        "t": [round(r[0].timestamp()) for r in rows],
        "original": [r[1] for r in rows],
        "deduplicated": [r[2] for r in rows],
        "duration": [r[3] for r in rows],
        "ok": [r[4] in SUCCESS for r in rows],
    }


def archives(session: Session, agent_id: int, page: int, per: int = 50) -> dict[str, Any]:
    """The host's archives a restore can start from (successful snapshots), newest first."""
    where = (
        Snapshot.agent_id == agent_id,
        Snapshot.exit_status.in_(SUCCESS),
        Snapshot.archive != "",
    )
    total = session.scalar(sa.select(sa.func.count()).select_from(Snapshot).where(*where))
    pages = max(1, -(-total // per))
    page = min(max(1, page), pages)
    rows = list(
        session.scalars(
            sa.select(Snapshot)
            .where(*where)
            .order_by(Snapshot.finished_at.desc(), Snapshot.id.desc())
            .limit(per)
            .offset((page - 1) * per)
        )
    )
    return {"archives": rows, "total": total, "page": page, "pages": pages}


def find_archive(session: Session, agent_id: int, archive: str) -> Snapshot | None:
    return session.scalars(
        sa.select(Snapshot)
        .where(
            Snapshot.agent_id == agent_id,
            Snapshot.archive == archive,
            Snapshot.exit_status.in_(SUCCESS),
        )
        .limit(1)
    ).first()


def agent_jobs(session: Session, agent_id: int, limit: int) -> list[Job]:
    return list(
        session.scalars(
            sa.select(Job).where(Job.agent_id == agent_id).order_by(Job.id.desc()).limit(limit)
        )
    )


def jobs_board(session: Session, host: Agent | None, finished_limit: int = 50) -> dict[str, list]:
    """Queued, running and the latest finished jobs, each with its host's name."""

    def rows(*where, order, limit=None):
        query = (
            sa.select(Job, Agent.name)
            .join(Agent, Agent.id == Job.agent_id)
            .where(*where, *((Job.agent_id == host.id,) if host else ()))
            .order_by(order)
        )
        if limit:
            query = query.limit(limit)
        return session.execute(query).all()

    return {
        "queued": rows(Job.state == "queued", order=Job.id, limit=500),
        "running": rows(Job.state == "running", order=Job.id, limit=500),
        "finished": rows(
            Job.state.in_(("succeeded", "failed", "expired")),
            order=Job.finished_at.desc(),
            limit=finished_limit,
        ),
    }


def operator_tokens(session: Session) -> list:
    """Operators' scoped tokens (names, scopes, dates; the table keeps only hashes)."""
    token = getattr(models, "ApiToken", None)
    if token is None:
        return []
    return list(session.scalars(sa.select(token).order_by(token.id)))


def alert_channels(session: Session) -> list[dict[str, Any]]:
    """Alert channels as the settings page shows them: never the URL, only its kind."""
    channel = getattr(models, "AlertChannel", None)
    if channel is None:
        return []
    return [
        {
            "name": c.name or f"channel {c.id}",
            "kind": (c.url_redacted or "").partition("://")[0] or "?",
            "statuses": f"{c.min_status} and worse" + (", daily digest" if c.digest else ""),
            "labels": c.labels or {},
            "state": "disabled" if c.disabled_at else "active",
        }
        for c in session.scalars(sa.select(channel).order_by(channel.id))
    ]


def tls_certificate(data_dir: Path) -> list[tuple[str, str]]:
    """What the data directory's server certificate (`saveos ca init`) says, if there is one:
    the certificate `saveos server` serves unless told another with --tls-cert."""
    from cryptography import x509

    path = data_dir / "tls" / "server.crt"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return []
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ", ".join(str(getattr(n, "value", n)) for n in names)
    except x509.ExtensionNotFound:
        sans = "–"
    return [
        ("certificate", str(path)),
        ("names", sans),
        ("issued by", cert.issuer.rfc4514_string()),
        ("valid until", cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")),
    ]
