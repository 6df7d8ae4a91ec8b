"""One repository's central maintenance, and its rollback after tampering.

maintain(): verify (nothing deleted that SaveOS did not delete) -> borg check (--verify-data when
due) -> prune with the host's retention -> verify again (a delete logged while we pruned would be
made permanent by compact) -> compact -> the state the next run holds the repository to.
Tampering found: no check, no prune, no compact; the result says `tampered`.

rollback(): the procedure Borg documents for append-only repositories, with the last good
transaction found instead of guessed: for each candidate (newest first) a hard-link copy cut at
it is opened with borg; the first that holds every archive expected by then wins; the repository
is kept as hard links, then cut there; the controller forgets its cache of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saveos_cli.errors import EXIT_FLEET, SaveOSError
from saveos_cli.retention import borg, verify
from saveos_cli.retention.servers import RepoFiles


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Repository:
    access: borg.BorgAccess
    path: str  # the repository's directory where it lives
    files: RepoFiles
    work_root: str  # a directory beside the repositories for probes and kept copies
    url_of: Callable[[str], str]  # a path where the repository lives -> a borg URL
    retention: dict[str, Any] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.access.host

    def facts(self, since: int | None, hash_segments: bool = False) -> dict[str, Any]:
        request = {"op": "facts", "repository": self.path, "since": since}
        request["hash_segments"] = hash_segments
        return self.files.call(request)[0]


def _names(archives: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: a.get("id") or "" for name, a in archives.items()}


def _result(repo: Repository, kind: str, started: datetime, **fields: Any) -> dict[str, Any]:
    finished = utcnow()
    out: dict[str, Any] = {
        "host": repo.host,
        "kind": kind,
        "result": "ok",
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3),
        "findings": [],
        "pruned": [],
        "archives": None,
        "transaction": None,
        "verify_data": False,
        "message": "",
        "state": None,
    }
    out.update(fields)
    return out


def maintain(
    repo: Repository,
    prev: verify.RepoState | None,
    on_record: dict[str, datetime],
    verify_data: bool = False,
) -> dict[str, Any]:
    started = utcnow()
    since = prev.transaction if prev else None
    facts = repo.facts(since, hash_segments=verify_data)

    def tampered(found: list, detail: str, **fields: Any) -> dict[str, Any]:
        return _result(
            repo,
            "prune",
            started,
            result="tampered",
            findings=[f.to_json() for f in found],
            verify_data=verify_data,
            message=f"tampering found, nothing pruned or compacted: {detail}",
            **fields,
        )

    try:
        before = borg.archives(repo.access)
    except SaveOSError as exc:
        found = verify.findings(prev, facts, None, on_record)
        if not found:
            raise
        return tampered(found, f"{found[0].message} ({exc.message})")
    found = verify.findings(prev, facts, _names(before), on_record)
    if found:
        return tampered(found, found[0].message, archives=len(before))
    checked = borg.check(repo.access, verify_data)
    if checked.status == "error":
        return _result(
            repo,
            "prune",
            started,
            result="error",
            archives=len(before),
            verify_data=verify_data,
            message=f"borg check failed, nothing pruned: {checked.error_message}",
        )
    pruned = borg.prune(repo.access, repo.retention)
    if pruned.status == "error":
        raise borg.fail(repo.access, "borg prune", pruned)
    after = borg.archives(repo.access)
    gone = sorted(set(before) - set(after))
    # A delete the host logged while we pruned would be made permanent by compact.
    during = repo.facts(facts.get("central_tip"))
    seen = {t["id"] for t in facts.get("logged_since") or []}
    late = [t for t in during.get("logged_since") or [] if t["id"] not in seen and t["deletes"]]
    if late:
        finding = verify.Finding(
            "deletes_logged",
            "deletes logged by the host's key while the central prune ran: transaction(s) "
            + ", ".join(str(t["id"]) for t in late),
            tuple(t["id"] for t in late),
        )
        return _result(
            repo,
            "prune",
            started,
            result="tampered",
            findings=[finding.to_json()],
            pruned=gone,
            archives=len(after),
            verify_data=verify_data,
            message="tampering found during the prune, not compacted: " + finding.message,
        )
    compacted = borg.compact(repo.access)
    if compacted.status == "error":
        raise borg.fail(repo.access, "borg compact", compacted)
    final = repo.facts(None)
    finished = iso(utcnow())
    state = verify.state_after(final, _names(after), finished)
    return _result(
        repo,
        "prune",
        started,
        pruned=gone,
        archives=len(after),
        transaction=state.transaction,
        verify_data=verify_data,
        message=f"{len(gone)} pruned, {len(after)} kept"
        + (", data verified" if verify_data else ""),
        state=state.to_json(),
    )


def rollback(
    repo: Repository,
    prev: verify.RepoState | None,
    on_record: dict[str, datetime],
    scratch: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Roll the repository back to its last good transaction; every expected archive is back."""
    started = utcnow()
    facts = repo.facts(prev.transaction if prev else None)
    candidates = verify.rollback_candidates(prev, facts)
    if not candidates:
        raise SaveOSError(
            f"{repo.host}: no transaction to roll back to (no central run recorded and nothing "
            "logged before the first delete).",
            exit_code=EXIT_FLEET,
        )
    stamp = started.strftime("%Y%m%dT%H%M%S")
    chosen, chosen_expected = None, set()
    tried = []
    for candidate in candidates:
        txn = candidate["id"]
        when = (
            parse_time(candidate["time"])
            if candidate["time"]
            else parse_time(prev.finished_at if prev else None)
        )
        expected = verify.expected_at(prev, on_record, when)
        probe_dir = f"{repo.work_root}/probe-{repo.host}-{stamp}-{txn}"
        repo.files.call(
            {"op": "probe", "repository": repo.path, "transaction": txn, "dest": probe_dir}
        )
        try:
            access = repo.access.at(repo.url_of(probe_dir), scratch / f"probe-{txn}")
            borg.import_key(access)  # the attacker may have re-keyed: the escrowed key opens it
            held = borg.archives(access)
        except SaveOSError as exc:
            held, error = {}, exc.message
        else:
            error = ""
        finally:
            repo.files.call({"op": "remove", "path": probe_dir, "root": repo.work_root})
            borg.forget_cache(repo.access.at("", scratch / f"probe-{txn}"))
        missing = sorted(expected - set(held))
        tried.append(
            {"transaction": txn, "archives": len(held), "missing": missing, "error": error}
        )
        log(
            f"{repo.host}: transaction {txn}: {len(held)} archives"
            + (f", missing {', '.join(missing[:5])}" if missing else "")
            + (f" ({error})" if error else "")
        )
        if not missing and not error:
            chosen, chosen_expected = txn, expected
            break
    if chosen is None:
        raise SaveOSError(
            f"{repo.host}: no transaction holds every expected archive (tried "
            + ", ".join(str(t["transaction"]) for t in tried)
            + "); the repository is untouched. Restore it from the offsite copy.",
            exit_code=EXIT_FLEET,
        )
    keep = f"{repo.work_root}/kept-{repo.host}-{stamp}"
    done = repo.files.call(
        {"op": "rollback", "repository": repo.path, "transaction": chosen, "keep": keep}
    )[0]
    borg.forget_cache(repo.access)
    borg.import_key(repo.access)
    after = borg.archives(repo.access)
    checked = borg.check(repo.access, verify_data=False)
    final = repo.facts(None)
    state = verify.state_after(final, _names(after), iso(utcnow()))
    state.transaction = chosen
    state.log_sha256 = verify.log_sha256(final.get("transactions") or [], chosen)
    missing = sorted(chosen_expected - set(after))
    ok = not missing and checked.status != "error"
    return _result(
        repo,
        "rollback",
        started,
        result="ok" if ok else "error",
        archives=len(after),
        transaction=chosen,
        message=(
            f"rolled back to transaction {chosen}: {len(after)} archives, "
            f"{len(done['segments_removed'])} segments set aside (kept at {keep})"
            + ("" if checked.status != "error" else f"; borg check: {checked.error_message}")
            + (f"; still missing {', '.join(missing)}" if missing else "")
        ),
        state=state.to_json() if ok else None,
        tried=tried,
        kept=keep,
    )
