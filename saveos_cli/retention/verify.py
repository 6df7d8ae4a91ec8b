"""Did anything delete what SaveOS did not delete? Pure functions over what was recorded.

The state a central run records when it finishes (`RepoState`) is what the next run holds the
repository to: every archive it left must still be there (with the same id), every archive the
API has on record since must be there, the segments it saw must be unchanged, the transaction
log up to it must read the same, and no transaction the host committed since may hold a delete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# The kinds of finding, worst first; every one of them means "tampered".
KINDS = (
    "segment_missing",
    "segment_changed",
    "log_rewritten",
    "key_changed",
    "archive_missing",
    "archive_replaced",
    "deletes_logged",
)


@dataclass
class RepoState:
    """The repository as the last central run left it."""

    transaction: int | None
    archives: dict[str, str] = field(default_factory=dict)  # name -> borg archive id
    segments: dict[str, list] = field(default_factory=dict)  # number -> [size, mtime_ns, ino, sha]
    log_sha256: str = ""
    finished_at: str | None = None
    key_sha256: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RepoState | None:
        if not data or data.get("transaction") is None:
            return None
        return cls(
            transaction=int(data["transaction"]),
            archives=dict(data.get("archives") or {}),
            segments=dict(data.get("segments") or {}),
            log_sha256=str(data.get("log_sha256") or ""),
            finished_at=data.get("finished_at"),
            key_sha256=data.get("key_sha256"),
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    items: tuple = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "items": list(self.items)}


def log_sha256(transactions: Iterable[Iterable[Any]], upto: int | None) -> str:
    """Digest of the log lines with an id <= upto: a later run must still read exactly these."""
    digest = hashlib.sha256()
    if upto is not None:
        for txn, when in transactions:
            if int(txn) <= upto:
                digest.update(f"{int(txn)} {when}\n".encode())
    return digest.hexdigest()


def state_after(
    facts: Mapping[str, Any], archives: Mapping[str, str], finished_at: str
) -> RepoState:
    """What a run that just finished records for the next one."""
    txn = facts.get("central_tip")
    if txn is None:
        txn = facts.get("index_transaction")
    return RepoState(
        transaction=txn,
        archives=dict(archives),
        segments=dict(facts.get("segments") or {}),
        log_sha256=log_sha256(facts.get("transactions") or [], txn),
        finished_at=finished_at,
        key_sha256=facts.get("key_sha256"),
    )


def _short(items: Iterable[Any], limit: int = 10) -> str:
    items = list(items)
    text = ", ".join(str(i) for i in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def findings(
    prev: RepoState | None,
    facts: Mapping[str, Any],
    archives_now: Mapping[str, str] | None,
    on_record: Iterable[str],
) -> list[Finding]:
    """Every sign that the repository lost something since `prev` (None: no central run yet).

    archives_now: name -> id from `borg list` now; on_record: archive names the API holds as
    made (and not pruned by a central run). archives_now None: borg could not list them (the
    archive checks are left out; what the files say still counts).
    """
    out: list[Finding] = []
    if prev is not None:
        now_segments = facts.get("segments") or {}
        missing, changed = [], []
        for number, (size, mtime_ns, _ino, digest) in sorted(
            prev.segments.items(), key=lambda kv: int(kv[0])
        ):
            if prev.transaction is not None and int(number) > prev.transaction:
                continue
            seen = now_segments.get(number)
            if seen is None:
                missing.append(int(number))
            elif (
                seen[0] != size or seen[1] != mtime_ns or (digest and seen[3] and seen[3] != digest)
            ):
                changed.append(int(number))
        if missing:
            out.append(
                Finding("segment_missing", f"segments removed: {_short(missing)}", tuple(missing))
            )
        if changed:
            out.append(
                Finding("segment_changed", f"segments altered: {_short(changed)}", tuple(changed))
            )
        if prev.log_sha256 and (
            log_sha256(facts.get("transactions") or [], prev.transaction) != prev.log_sha256
        ):
            out.append(
                Finding(
                    "log_rewritten",
                    f"the transaction log up to transaction {prev.transaction} was rewritten",
                )
            )
        if prev.key_sha256 and facts.get("key_sha256") != prev.key_sha256:
            out.append(
                Finding(
                    "key_changed",
                    "the repository's key was rewritten (a client changed its passphrase?)",
                )
            )
    expected = set(prev.archives) if prev else set()
    expected |= set(on_record)
    gone = sorted(expected - set(archives_now)) if archives_now is not None else []
    if gone:
        out.append(Finding("archive_missing", f"archives missing: {_short(gone)}", tuple(gone)))
    if prev and archives_now is not None:
        replaced = sorted(
            name
            for name, ident in prev.archives.items()
            if name in archives_now and ident and archives_now[name] != ident
        )
        if replaced:
            out.append(
                Finding(
                    "archive_replaced",
                    f"archives replaced by others of the same name: {_short(replaced)}",
                    tuple(replaced),
                )
            )
    logged = [t for t in facts.get("logged_since") or [] if t.get("deletes")]
    if logged:
        out.append(
            Finding(
                "deletes_logged",
                "deletes logged by the host's key in transaction(s) "
                + _short(f"{t['id']} ({t['deletes']} objects, {t['time']} UTC)" for t in logged),
                tuple(t["id"] for t in logged),
            )
        )
    return sorted(out, key=lambda f: KINDS.index(f.kind))


def rollback_candidates(prev: RepoState | None, facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Transactions to try as "last good", newest first: every one logged before the first that
    deleted something (all of them when none did: a re-keyed repository is good again at its
    newest transaction once the escrowed key is back), then the last central run's. Each:
    {"id", "time"} (time None for the central run's). The probe of each decides."""
    logged = list(facts.get("logged_since") or [])
    first_bad = next((i for i, t in enumerate(logged) if t.get("deletes")), len(logged))
    out = [{"id": t["id"], "time": t["time"]} for t in reversed(logged[:first_bad])]
    if prev is not None and prev.transaction is not None:
        out.append({"id": prev.transaction, "time": None})
    return out


def expected_at(
    prev: RepoState | None, on_record: Mapping[str, datetime], when: datetime | None
) -> set[str]:
    """The archives a good state at `when` holds: the last run's, and those the API saw finish
    by then (when None: the last run's only)."""
    out = set(prev.archives) if prev else set()
    if when is not None:
        out |= {name for name, finished in on_record.items() if finished <= when}
    return out
