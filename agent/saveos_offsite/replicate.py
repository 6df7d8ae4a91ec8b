"""Sync the local borg repository to S3 (only what changed) and fetch it back onto a new host.

Change detection: a local manifest (state_dir) keeps, per file, size + mtime + inode + sha256 and
the ETag S3 gave the upload, so an unchanged segment is neither re-read nor re-uploaded. The remote
listing is compared too, so an object deleted (or altered) by hand is uploaded again.

Longer than most modules on purpose: sync and fetch are the two directions of one object
layout (names, manifest, lock handling) that must stay in step.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from saveos_agent import locks
from saveos_rules import iso, utcnow, write_atomically

from saveos_offsite.settings import OffsiteError, Settings, read_credentials

log = logging.getLogger("saveos_offsite")

# borg's own lock files are never copied (a restored repo must not look locked)
_SKIP = ("lock.exclusive", "lock.roster")
_CHUNK = 1024 * 1024
MANIFEST_VERSION = 1


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_order(rel: str) -> Tuple[int, int, str]:
    """Segments first, then index/hints/integrity, then config: a copy read mid-sync still has
    every segment the newer index names."""
    if rel.startswith("data/"):
        digits = re.findall(r"\d+", rel)
        return (0, int(digits[-1]) if digits else 0, rel)
    if rel.split(".")[0] in ("index", "hints", "integrity"):
        return (1, 0, rel)
    return (2, 0, rel)


def local_files(repo: str) -> Iterator[Tuple[str, os.stat_result]]:
    for root, dirs, files in os.walk(repo):
        if root == repo:
            dirs[:] = [d for d in dirs if d not in _SKIP]
        dirs.sort()
        for name in sorted(files):
            if root == repo and name in _SKIP:
                continue
            full = os.path.join(root, name)
            st = os.lstat(full)
            if not os.path.isfile(full) or os.path.islink(full):
                continue
            yield os.path.relpath(full, repo).replace(os.sep, "/"), st


def lock_holders(repo: str) -> List[str]:
    return [h.describe() for h in locks.holders(repo)]


# ---- manifest --------------------------------------------------------------------------------


def manifest_path(settings: Settings) -> str:
    name = hashlib.sha256(settings.target.encode()).hexdigest()[:16]
    return os.path.join(settings.state_dir, f"offsite-{name}.json")


def load_manifest(settings: Settings) -> Dict[str, Any]:
    empty = {"version": MANIFEST_VERSION, "target": settings.target, "files": {}, "missing": {}}
    try:
        with open(manifest_path(settings), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return empty
    if not isinstance(data, dict) or data.get("target") != settings.target:
        return empty
    data.setdefault("files", {})
    data.setdefault("missing", {})
    return data


def save_manifest(settings: Settings, manifest: Dict[str, Any]) -> None:
    os.makedirs(settings.state_dir, mode=0o700, exist_ok=True)
    path = manifest_path(settings)
    write_atomically(path, json.dumps(manifest, sort_keys=True).encode(), 0o600)


# ---- S3 --------------------------------------------------------------------------------------


def s3_client(settings: Settings):
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise OffsiteError(
            "boto3 is not installed in this Python (the offsite virtualenv is missing?)"
        ) from None
    creds = read_credentials(settings) or {}
    config = BotoConfig(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=120,
        retries={"max_attempts": 3, "mode": "standard"},
        # MinIO, Ceph and friends serve buckets by path, not by virtual host
        s3={"addressing_style": "path"} if settings.endpoint_url else None,
    )
    session = boto3.session.Session(region_name=settings.region, **creds)
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def transfer_config(settings: Settings):
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=settings.multipart_threshold,
        multipart_chunksize=settings.multipart_chunksize,
        max_concurrency=settings.max_concurrency,
    )


def remote_objects(client, settings: Settings) -> Dict[str, Dict[str, Any]]:
    out = {}
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=settings.key_prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = {"size": obj["Size"], "etag": obj["ETag"].strip('"')}
    return out


def remote_versions(client, settings: Settings, as_of: dt.datetime) -> Dict[str, Dict[str, Any]]:
    """key -> {size, etag, version_id} of the version each key had at `as_of` (object versions:
    the copy as it stood then, even after later overwrites, deletes or delete markers)."""
    newest: Dict[str, Tuple[dt.datetime, Optional[Dict[str, Any]]]] = {}
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=settings.key_prefix):
        entries = [(v, False) for v in page.get("Versions", [])]
        entries += [(m, True) for m in page.get("DeleteMarkers", [])]
        for entry, is_marker in entries:
            when = entry["LastModified"]
            if when > as_of:
                continue
            key = entry["Key"]
            if key in newest and newest[key][0] >= when:
                continue
            info = None
            if not is_marker:
                info = {
                    "size": entry["Size"],
                    "etag": entry["ETag"].strip('"'),
                    "version_id": entry["VersionId"],
                }
            newest[key] = (when, info)
    return {key: info for key, (_when, info) in newest.items() if info is not None}


def first_upload(client, settings: Settings) -> Optional[dt.datetime]:
    """When the copy's oldest object version was written (None: the copy never existed)."""
    first: Optional[dt.datetime] = None
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=settings.key_prefix):
        for entry in page.get("Versions", []):
            if first is None or entry["LastModified"] < first:
                first = entry["LastModified"]
    return first


def lock_args(settings: Settings, now: float) -> Dict[str, Any]:
    """PutObject arguments that lock the new version (none when no lock is configured)."""
    if not settings.object_lock_mode:
        return {}
    until = dt.datetime.fromtimestamp(now, dt.timezone.utc) + dt.timedelta(
        days=settings.object_lock_days
    )
    return {"ObjectLockMode": settings.object_lock_mode, "ObjectLockRetainUntilDate": until}


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a boto/botocore failure; these never carry the secret key."""
    try:
        from botocore.exceptions import ClientError
    except ImportError:  # pragma: no cover - boto3 is there when this runs
        ClientError = ()  # type: ignore[assignment]  # noqa: N806
    if ClientError and isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"S3 error {err.get('Code', '?')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


# ---- sync ------------------------------------------------------------------------------------


def _result(settings: Settings, started: dt.datetime, **fields: Any) -> Dict[str, Any]:
    finished = utcnow()
    out = {
        "status": "ok",
        "result": "ok",
        "target": settings.target,
        "objects": 0,
        "objects_uploaded": 0,
        "bytes_uploaded": 0,
        "objects_deleted": 0,
        "pending_delete": 0,
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3),
        "message": "",
    }
    out.update(fields)
    return out


def sync(settings: Settings, now: Optional[float] = None) -> Dict[str, Any]:
    started = utcnow()
    repo = settings.repository
    if not repo:
        raise OffsiteError("no repository to copy: set 'repository' in the config or --repository")
    if not os.path.isfile(os.path.join(repo, "config")):
        raise OffsiteError(f"{repo} is not a borg repository (no config file)")
    holders = lock_holders(repo)
    if holders:
        return _result(
            settings,
            started,
            status="warning",
            result="skipped",
            message="repo locked by " + ", ".join(holders) + ": sync skipped",
        )
    manifest = load_manifest(settings)
    files: Dict[str, Any] = manifest["files"]
    try:
        client = s3_client(settings)
        remote = remote_objects(client, settings)
        local: Dict[str, Dict[str, Any]] = {}
        for rel, st in local_files(repo):
            known = files.get(rel) or {}
            same = (
                known.get("size") == st.st_size
                and known.get("mtime_ns") == st.st_mtime_ns
                and known.get("ino") == st.st_ino
            )
            digest = known["sha256"] if same and known.get("sha256") else None
            if digest is None:
                digest = sha256_file(os.path.join(repo, rel))
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
            entry["sha256"] = digest
            if known.get("sha256") == digest:
                entry["etag"] = known.get("etag")
            local[rel] = entry

        uploaded = restored = relocked = 0
        sent_bytes = 0
        config = transfer_config(settings)
        now = time.time() if now is None else now
        locking = lock_args(settings, now)
        for rel in sorted(local, key=upload_order):
            entry = local[rel]
            key = settings.key_prefix + rel
            there = remote.get(key)
            if there and there["size"] == entry["size"] and there["etag"] == entry.get("etag"):
                known = files.get(rel) or {}
                for field in ("version_id", "locked_until"):
                    if field in known:
                        entry[field] = known[field]
                continue
            if there is None and entry.get("etag"):
                restored += 1  # we uploaded it before: someone removed it
            client.upload_file(
                os.path.join(repo, rel),
                settings.bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": entry["sha256"]}, **locking},
                Config=config,
            )
            head = client.head_object(Bucket=settings.bucket, Key=key)
            entry["etag"] = head["ETag"].strip('"')
            if locking:
                entry["version_id"] = head.get("VersionId")
                entry["locked_until"] = locking["ObjectLockRetainUntilDate"].timestamp()
            uploaded += 1
            sent_bytes += entry["size"]
            log.info("uploaded %s (%d bytes)", rel, entry["size"])
            files[rel] = entry  # progress survives an interruption
        manifest["files"] = local
        if locking:
            relocked = extend_locks(client, settings, local, now)

        # a lock taken while we uploaded means borg may have rewritten what we read: say so,
        # and delete nothing this time
        holders = lock_holders(repo)
        if holders:
            save_manifest(settings, manifest)
            return _result(
                settings,
                started,
                status="error",
                result="error",
                objects=len(local),
                objects_uploaded=uploaded,
                bytes_uploaded=sent_bytes,
                message="repo locked during the sync by "
                + ", ".join(holders)
                + "; the next sync completes the copy",
            )

        missing: Dict[str, float] = {}
        doomed = []
        local_keys = {settings.key_prefix + rel for rel in local}
        for key in sorted(remote):
            if key in local_keys:
                continue
            first = float(manifest["missing"].get(key, now))
            if now - first >= settings.delete_delay_s:
                doomed.append(key)
            else:
                missing[key] = first
        for i in range(0, len(doomed), 1000):
            client.delete_objects(
                Bucket=settings.bucket,
                Delete={"Objects": [{"Key": k} for k in doomed[i : i + 1000]], "Quiet": True},
            )
        manifest["missing"] = missing
    except OffsiteError:
        raise
    except Exception as exc:  # boto, network, disk: one clear line, the manifest keeps progress
        save_manifest(settings, manifest)
        log.debug("sync failed", exc_info=True)
        return _result(
            settings, started, status="error", result="error", message=describe_error(exc)
        )
    save_manifest(settings, manifest)
    message = f"{uploaded} of {len(local)} objects uploaded"
    if restored:
        message += f" ({restored} missing remotely, restored)"
    if doomed:
        message += f"; {len(doomed)} deleted remotely"
    return _result(
        settings,
        started,
        objects=len(local),
        objects_uploaded=uploaded,
        bytes_uploaded=sent_bytes,
        objects_restored=restored,
        objects_relocked=relocked,
        objects_deleted=len(doomed),
        pending_delete=len(missing),
        message=message,
    )


def extend_locks(client, settings: Settings, local: Dict[str, Dict[str, Any]], now: float) -> int:
    """Keep every current object locked for the whole period: a segment borg still uses may be
    years old, and its lock must not run out while it is current. Extended once half the period
    is gone (one PutObjectRetention per object per half period)."""
    period = settings.object_lock_days * 86400
    extended = 0
    for rel, entry in sorted(local.items()):
        if float(entry.get("locked_until") or 0) - now > period / 2:
            continue
        key = settings.key_prefix + rel
        version = entry.get("version_id")
        if not version:
            version = client.head_object(Bucket=settings.bucket, Key=key).get("VersionId")
        until = lock_args(settings, now)["ObjectLockRetainUntilDate"]
        args = {"Bucket": settings.bucket, "Key": key, "VersionId": version}
        client.put_object_retention(
            **args, Retention={"Mode": settings.object_lock_mode, "RetainUntilDate": until}
        )
        entry["version_id"], entry["locked_until"] = version, until.timestamp()
        extended += 1
    return extended


# ---- verify ----------------------------------------------------------------------------------


def verify(settings: Settings, now: Optional[float] = None) -> Dict[str, Any]:
    """Prove the copy cannot be deleted: the bucket keeps versions and has Object Lock on, and
    every current object version is locked (in the declared mode, for at least half the
    declared period from now: the sync extends it before that)."""
    started = utcnow()
    now = time.time() if now is None else now
    try:
        client = s3_client(settings)
        versioning = client.get_bucket_versioning(Bucket=settings.bucket).get("Status")
        try:
            lock_conf = client.get_object_lock_configuration(Bucket=settings.bucket)
            bucket_lock = lock_conf["ObjectLockConfiguration"].get("ObjectLockEnabled")
        except Exception as exc:  # ObjectLockConfigurationNotFoundError: no lock on the bucket
            log.debug("no object lock configuration: %s", describe_error(exc))
            bucket_lock = None
        remote = remote_objects(client, settings)
        unlocked, short, weak = [], [], []
        earliest: Optional[dt.datetime] = None
        floor = dt.datetime.fromtimestamp(now, dt.timezone.utc) + dt.timedelta(
            days=settings.object_lock_days / 2
        )
        for key in sorted(remote):
            head = client.head_object(Bucket=settings.bucket, Key=key)
            mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
            rel = key[len(settings.key_prefix) :]
            if (
                not mode
                or until is None
                or until <= dt.datetime.fromtimestamp(now, dt.timezone.utc)
            ):
                unlocked.append(rel)
                continue
            if settings.object_lock_mode and mode != settings.object_lock_mode:
                weak.append(rel)
            if until < floor:
                short.append(rel)
            earliest = until if earliest is None or until < earliest else earliest
    except OffsiteError:
        raise
    except Exception as exc:
        log.debug("verify failed", exc_info=True)
        return _result(
            settings, started, status="error", result="error", message=describe_error(exc)
        )
    problems = []
    if versioning != "Enabled":
        problems.append(f"bucket versioning is {versioning or 'off'}")
    if bucket_lock != "Enabled":
        problems.append("the bucket has no Object Lock")
    if not remote:
        problems.append(f"no object at {settings.target}")
    if unlocked:
        problems.append(f"{len(unlocked)} object(s) not locked: " + ", ".join(unlocked[:5]))
    if weak:
        problems.append(
            f"{len(weak)} object(s) locked in another mode than {settings.object_lock_mode}"
        )
    if short:
        problems.append(
            f"{len(short)} object(s) locked for less than half of {settings.object_lock_days} days"
        )
    status = "error" if problems else "ok"
    return _result(
        settings,
        started,
        status=status,
        result=status,
        objects=len(remote),
        objects_locked=len(remote) - len(unlocked),
        unlocked=unlocked,
        versioning=versioning,
        object_lock=bucket_lock,
        locked_until_min=iso(earliest) if earliest else None,
        message="; ".join(problems)
        or f"{len(remote)} objects locked, the earliest until {iso(earliest)}",
    )


# ---- fetch -----------------------------------------------------------------------------------


def _segment_number(rel: str) -> Optional[int]:
    """data/<dir>/<n> -> n; None for the repository's other files."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[0] == "data" and parts[2].isdigit():
        return int(parts[2])
    return None


def _proof_order(rel: str) -> Tuple[int, int]:
    """The repository's other files first, then its segments newest first."""
    number = _segment_number(rel)
    return (0, 0) if number is None else (1, -number)


def fetch(
    settings: Settings,
    dest: str,
    enough: Optional[Callable[[], bool]] = None,
    as_of: Optional[dt.datetime] = None,
) -> Dict[str, Any]:
    """Download the offsite copy into an empty dest and verify every object's sha256.

    enough: to prove the copy opens without downloading all of it. The repository's other
    files come first, then its segments newest first (the last commit and the manifest are
    in the newest ones), and after each segment enough() says whether to stop.
    as_of: the copy as it stood at that instant, from object versions (a copy overwritten or
    deleted since, by a compromised host or by mistake, comes back as it was).
    """
    started = utcnow()
    if os.path.exists(dest) and os.listdir(dest):
        raise OffsiteError(f"--dest {dest} is not empty: refusing to mix repositories")
    os.makedirs(dest, mode=0o700, exist_ok=True)
    try:
        client = s3_client(settings)
        if as_of is None:
            remote = remote_objects(client, settings)
        else:
            remote = remote_versions(client, settings, as_of)
        if not remote:
            when = ""
            if as_of is not None:
                first = first_upload(client, settings)
                when = f" as of {iso(as_of)}"
                when += f" (its first object is from {iso(first)})" if first else " (nor since)"
            raise OffsiteError(f"no offsite copy at {settings.target}{when}")
        config = transfer_config(settings)
        fetched = size = 0
        bad = []
        objects = sorted((key[len(settings.key_prefix) :], key) for key in remote)
        if enough is not None:
            objects.sort(key=lambda o: _proof_order(o[0]))
        for rel, key in objects:
            if not rel or rel.startswith("/") or ".." in rel.split("/"):
                raise OffsiteError(f"refusing unsafe object key {key!r}")
            path = os.path.join(dest, *rel.split("/"))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            version = remote[key].get("version_id")
            extra = {"VersionId": version} if version else {}
            client.download_file(settings.bucket, key, path, ExtraArgs=extra or None, Config=config)
            os.chmod(path, 0o600)
            head = client.head_object(Bucket=settings.bucket, Key=key, **extra)
            expected = head["Metadata"].get("sha256")
            if expected is None or sha256_file(path) != expected:
                bad.append(rel)
            fetched += 1
            size += remote[key]["size"]
            if enough is not None and not bad and _segment_number(rel) is not None and enough():
                break
    except OffsiteError:
        raise
    except Exception as exc:
        log.debug("fetch failed", exc_info=True)
        return _result(
            settings, started, status="error", result="error", message=describe_error(exc)
        )
    status = "error" if bad else "ok"
    message = f"{fetched} of {len(remote)} objects fetched into {dest}"
    if bad:
        message += f"; sha256 mismatch or missing for {len(bad)}: " + ", ".join(bad[:10])
    return _result(
        settings,
        started,
        status=status,
        result=status,
        objects=fetched,
        objects_offsite=len(remote),
        bytes_downloaded=size,
        mismatched=bad,
        dest=dest,
        message=message,
    )
