"""What a borg repository's own files say, read where the repository lives (standard library only).

This module runs on the repository server: `python3 -c <this file> '<request json>'` over the
controller's root SSH session (no secret crosses: it never opens an archive). It reads what borg
1.2 writes in an append-only repository and does the rollback borg documents for one:

- `transactions`: one line per transaction committed through an append-only `borg serve`
  ("transaction 13, UTC time 2026-12-01T08:34:36.985461"); the id is the number of the last
  segment file of that transaction. A full-access run (the central prune) logs nothing.
- `data/<n // 10000>/<n>`: the segment files, `BORG_SEG` then entries of (crc32, size, tag, key):
  PUT 0, DELETE 1, COMMIT 2. Committed segments are never rewritten in append-only mode, so a
  changed or vanished one is tampering; a DELETE of any key but the manifest's (32 zero bytes,
  overwritten by every `borg create`) is an archive or chunk deleted by the client.
- Rollback to transaction T: remove `index.N`, `hints.N`, `integrity.N` (always expendable; borg
  rebuilds them) and every segment after T, after keeping the whole repository as hard links.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import struct
import sys

MAGIC = b"BORG_SEG"
TAG_PUT, TAG_DELETE, TAG_COMMIT = 0, 1, 2
MANIFEST_ID = bytes(32)
_HEADER = struct.Struct("<IIB")
_KEY_LEN = 32
_LINE = re.compile(r"^transaction (\d+), UTC time (\S+)\s*$")
_EXPENDABLE = re.compile(r"^(index|hints|integrity)\.\d+(\.tmp)?$")


class RepoFilesError(Exception):
    pass


def is_repository(repo):
    return os.path.isfile(os.path.join(repo, "config")) and os.path.isdir(
        os.path.join(repo, "data")
    )


def transactions(repo):
    """[(id, utc time text)] from the `transactions` log, in file order."""
    out = []
    try:
        with open(os.path.join(repo, "transactions"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = _LINE.match(line)
                if match:
                    out.append((int(match.group(1)), match.group(2)))
    except FileNotFoundError:
        pass
    return out


def segments(repo):
    """{segment number: path} of every segment file."""
    out = {}
    data = os.path.join(repo, "data")
    for sub in os.listdir(data):
        folder = os.path.join(data, sub)
        if not sub.isdigit() or not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name.isdigit():
                out[int(name)] = os.path.join(folder, name)
    return out


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key_sha256(repo):
    """sha256 of the repokey in the repository's config (`borg key change-passphrase` by a
    client rewrites it: the escrowed passphrase would no longer open the repository)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(repo, "config"), encoding="utf-8")
    key = parser.get("repository", "key", fallback="")
    return hashlib.sha256("".join(key.split()).encode()).hexdigest() if key else None


def index_transaction(repo):
    """N of the newest non-empty index.N (the last transaction borg finished), or None."""
    ids = []
    for name in os.listdir(repo):
        full = os.path.join(repo, name)
        if name.startswith("index.") and name[6:].isdigit() and os.path.getsize(full) > 0:
            ids.append(int(name[6:]))
    return max(ids) if ids else None


def scan_segment(path):
    """(deletes of keys other than the manifest, commits) in one segment: headers only."""
    deletes = commits = 0
    with open(path, "rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise RepoFilesError(f"{path}: not a borg segment (bad magic)")
        while True:
            header = fh.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            _crc, size, tag = _HEADER.unpack(header)
            if size < _HEADER.size:
                raise RepoFilesError(f"{path}: corrupt entry (size {size})")
            rest = size - _HEADER.size
            if tag == TAG_COMMIT:
                commits += 1
            elif tag == TAG_DELETE:
                key = fh.read(_KEY_LEN)
                rest -= len(key)
                if key != MANIFEST_ID:
                    deletes += 1
            fh.seek(rest, os.SEEK_CUR)
    return deletes, commits


def central_tip(repo, segs=None, logged=()):
    """The newest transaction no append-only client logged: the last full-access run's.

    A host may commit right after the central compact; its transaction is in the log, so walk
    down from the index's transaction over segments, past logged ones, to the newest commit
    that is not logged."""
    segs = segments(repo) if segs is None else segs
    txn = index_transaction(repo)
    if txn is None:
        txn = max(segs) if segs else None
    while txn is not None and txn in logged:
        below = [n for n in segs if n < txn]
        txn = next((n for n in sorted(below, reverse=True) if scan_segment(segs[n])[1]), None)
    return txn


def facts(repo, since=None, hash_segments=False):
    """The repository as its files stand: log, segments (size, mtime, inode, sha256 when asked),
    and, per transaction logged after `since`, how many client deletes its segments hold."""
    if not is_repository(repo):
        raise RepoFilesError(f"{repo} is not a borg repository")
    segs = segments(repo)
    fingerprint = {}
    for number, path in sorted(segs.items()):
        st = os.stat(path)
        digest = sha256_file(path) if hash_segments else None
        fingerprint[str(number)] = [st.st_size, st.st_mtime_ns, st.st_ino, digest]
    log = transactions(repo)
    logged = []
    floor = since if since is not None else -1
    previous = floor
    for txn, when in log:
        if txn <= floor:
            continue
        deletes = 0
        for number in sorted(n for n in segs if previous < n <= txn):
            deletes += scan_segment(segs[number])[0]
        logged.append({"id": txn, "time": when, "deletes": deletes})
        previous = max(previous, txn)
    return {
        "repository": repo,
        "index_transaction": index_transaction(repo),
        "central_tip": central_tip(repo, segs, {t for t, _ in log}),
        "last_segment": max(segs) if segs else None,
        "key_sha256": key_sha256(repo),
        "segments": fingerprint,
        "transactions": [[t, w] for t, w in log],
        "logged_since": logged,
        "hashed": bool(hash_segments),
    }


def _truncate(repo, txn, keep_index=False):
    """Drop what came after transaction txn: segments, index/hints/integrity (keep_index: but
    those of txn itself, which describe exactly what is left), log lines."""
    removed = []
    for number, path in sorted(segments(repo).items()):
        if number > txn:
            os.unlink(path)
            removed.append(number)
    for name in os.listdir(repo):
        if _EXPENDABLE.match(name) and not (keep_index and name.split(".")[1] == str(txn)):
            os.unlink(os.path.join(repo, name))
    log = os.path.join(repo, "transactions")
    if os.path.exists(log):
        kept = [f"transaction {t}, UTC time {w}\n" for t, w in transactions(repo) if t <= txn]
        st = os.stat(log)
        tmp = log + ".saveos-tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(kept)
            fh.flush()
            os.fsync(fh.fileno())
        _same_owner(tmp, st)
        os.replace(tmp, log)
    return removed


def _same_owner(path, st):
    """Files this module makes belong to whoever owns the repository (its borg serve user)."""
    os.chmod(path, st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)


def link_copy(repo, dest):
    """A hard-link copy of the repository (borg's advice before a rollback: `cp -al`)."""
    if os.path.exists(dest):
        raise RepoFilesError(f"{dest} exists already")
    for root, dirs, files in os.walk(repo):
        rel = os.path.relpath(root, repo)
        target = os.path.join(dest, rel) if rel != "." else dest
        os.makedirs(target, mode=0o700)
        shutil.copystat(root, target)
        _same_owner(target, os.stat(root))
        for name in files:
            if name.startswith("lock."):
                continue
            os.link(os.path.join(root, name), os.path.join(target, name))
        dirs[:] = [d for d in dirs if not d.startswith("lock.")]
    return dest


def probe(repo, txn, dest):
    """A hard-link copy of the repository as it stood at transaction txn, to open with borg."""
    link_copy(repo, dest)
    # a copy shares segment inodes with the repository: borg only unlinks or appends new files
    _truncate(dest, txn)
    return dest


def snapshot(repo, txn, dest):
    """The repository exactly as a central run verified it (transaction txn), frozen as hard
    links for the offsite copy: whatever the host commits meanwhile is not in it. The index of
    txn stays (borg opens the copy without rebuilding it); a stale snapshot is replaced."""
    if not is_repository(repo):
        raise RepoFilesError(f"{repo} is not a borg repository")
    if txn not in segments(repo):
        raise RepoFilesError(f"{repo} has no segment {txn}: not a transaction of it")
    if os.path.lexists(dest):
        shutil.rmtree(dest)
    link_copy(repo, dest)
    _truncate(dest, txn, keep_index=True)
    return dest


def rollback(repo, txn, keep):
    """Roll the repository back to transaction txn; the state before is kept at `keep`."""
    if not is_repository(repo):
        raise RepoFilesError(f"{repo} is not a borg repository")
    if any(name.startswith("lock.") for name in os.listdir(repo)):
        raise RepoFilesError(f"{repo} is locked (a borg process is using it): not rolled back")
    if txn not in segments(repo):
        raise RepoFilesError(f"{repo} has no segment {txn}: not a transaction of it")
    link_copy(repo, keep)
    removed = _truncate(repo, txn)
    return {"repository": repo, "transaction": txn, "kept": keep, "segments_removed": removed}


def remove_tree(path, root):
    """rm -rf path, only below root (probes and kept copies are made there)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    if not real.startswith(base.rstrip("/") + "/"):
        raise RepoFilesError(f"refusing to remove {path}: not below {root}")
    shutil.rmtree(real, ignore_errors=True)


def handle(request):
    op = request.get("op")
    repo = request.get("repository", "")
    if op == "facts":
        return facts(repo, request.get("since"), bool(request.get("hash_segments")))
    if op == "probe":
        return {"probe": probe(repo, int(request["transaction"]), request["dest"])}
    if op == "snapshot":
        return {"snapshot": snapshot(repo, int(request["transaction"]), request["dest"])}
    if op == "rollback":
        return rollback(repo, int(request["transaction"]), request["keep"])
    if op == "remove":
        remove_tree(request["path"], request["root"])
        return {"removed": request["path"]}
    raise RepoFilesError(f"unknown op {op!r}")


def main(argv):
    try:
        requests = json.loads(argv[1])
        results = [handle(r) for r in requests]
        print(json.dumps({"ok": True, "results": results}))
        return 0
    except (RepoFilesError, OSError, KeyError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
