"""Escrow proofs and disaster recovery, run from the controller.

Hosts come from the Ansible inventory (connection vars + `saveos_agent_offsite_*` vars); the
controller talks to them with plain `ssh` using those vars. Secrets stay off every command line:
borg reads the escrowed passphrase through BORG_PASSCOMMAND (a file path) on the controller, or
through BORG_PASSPHRASE_FD=0 fed over the SSH session's stdin on a host.

Longer than most modules on purpose: escrow verify and recover share the escrow and SSH
plumbing above them (the hosts themselves: inventory_hosts).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from saveos_rules import iso, private_file_problem, utcnow

from saveos_cli import config, repo_servers
from saveos_cli.errors import EXIT_FLEET, SaveOSError
from saveos_cli.inventory_hosts import Host, load_hosts

# Borg may meet a repository it never saw (a fresh BORG_BASE_DIR, a copy in a new place).
BORG_QUIET_ENV = {
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
    "BORG_EXIT_CODES": "legacy",
}
q = shlex.quote


# ---- escrow ----------------------------------------------------------------------------------


def escrow_root() -> Path:
    env = os.environ.get("SAVEOS_ESCROW_DIR")
    return Path(env) if env else config.data_dir() / "escrow"


def escrow_files(name: str) -> tuple[Path, Path]:
    """(passphrase, key.export) of a host; both must exist and be private."""
    folder = escrow_root() / name
    out = []
    for leaf in ("passphrase", "key.export"):
        path = folder / leaf
        if not path.is_file():
            raise SaveOSError(f"{name}: no escrowed {leaf} at {path} (was the host deployed?).")
        problem = private_file_problem(str(path))
        if problem:
            raise SaveOSError(f"{name}: {problem}.")
        out.append(path)
    return out[0], out[1]


def offsite_package() -> None:
    """saveos_offsite lives next to the agent (agent/); a source checkout has it off sys.path."""
    try:
        import saveos_offsite  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))


def offsite_settings(host: Host, hosts: dict[str, Host] | None = None):
    """saveos_offsite Settings for a host's copy; None when it has none. A host on a repository
    server whose server makes the copies: the server's `saveos_repo_server_offsite_*` vars;
    else the host's own `saveos_agent_offsite_*` vars."""
    where = repo_servers.location(host, hosts or {host.name: host}) if hosts else None
    if where is not None:
        from saveos_cli.retention import offsite

        if offsite.enabled(where):
            return offsite.settings(host.name, where)
    v = host.vars
    if not v.get("saveos_agent_offsite_bucket"):
        return None
    offsite_package()
    from saveos_offsite.settings import Settings

    return Settings(
        path="<inventory>",
        bucket=str(v["saveos_agent_offsite_bucket"]),
        repository=host.repository,
        host=host.name,
        prefix=str(v.get("saveos_agent_offsite_prefix", "saveos")),
        endpoint_url=v.get("saveos_agent_offsite_endpoint_url") or None,
        region=v.get("saveos_agent_offsite_region") or None,
        credentials_file=v.get("saveos_agent_offsite_credentials_file") or None,
        object_lock_mode=v.get("saveos_agent_offsite_object_lock_mode") or None,
        object_lock_days=int(v.get("saveos_agent_offsite_object_lock_days") or 0),
    )


def _borg_env(base_dir: Path, passphrase_file: Path, rsh: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
    env.update(BORG_QUIET_ENV)
    env["BORG_BASE_DIR"] = str(base_dir)
    # the path goes into the environment, the passphrase itself only into borg's pipe
    env["BORG_PASSCOMMAND"] = "cat " + shlex.quote(str(passphrase_file))
    if rsh:
        env["BORG_RSH"] = rsh
    return env


def _borg_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"borg exited {proc.returncode}"


def _try_list(repo: str, env: dict[str, str]) -> tuple[bool, int, str, bool]:
    """(ok, archives, error, missing): missing when borg wanted a segment a partial copy of the
    repository does not have yet (borg 1.2 says so only in its traceback)."""
    proc = subprocess.run(
        ["borg", "list", "--json", repo], env=env, capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        return False, 0, _borg_error(proc), _wants_segment(proc, repo)
    return True, len(json.loads(proc.stdout).get("archives", [])), "", False


def _wants_segment(proc: subprocess.CompletedProcess, repo: str) -> bool:
    return f"No such file or directory: '{os.path.join(repo, 'data')}/" in proc.stderr


class _OpensWithEscrow:
    """enough() for replicate.fetch: import the escrowed key, then list the archives with the
    escrowed passphrase; fetch the next segment only while borg is missing one."""

    def __init__(self, repo: str, key_export: Path, env: dict[str, str]):
        self.repo, self.key_export, self.env = repo, key_export, env
        self.imported = False
        self.outcome: tuple[bool, int, str] | None = None

    def __call__(self) -> bool:
        if not self.imported:
            imported = subprocess.run(
                ["borg", "key", "import", self.repo, str(self.key_export)],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if imported.returncode != 0:
                if _wants_segment(imported, self.repo):
                    return False
                self.outcome = (False, 0, f"escrowed key.export refused: {_borg_error(imported)}")
                return True
            self.imported = True
        ok, archives, error, missing = _try_list(self.repo, self.env)
        self.outcome = (ok, archives, error)
        return ok or not missing


def verify_escrow(
    host: Host, method: str = "auto", hosts: dict[str, Host] | None = None
) -> dict[str, Any]:
    """Open the host's repository with only the escrowed passphrase and key (read-only).

    offsite: download the S3 copy to a temp dir, newest segments first and only until it
    opens, `borg key import` the escrowed key into it (a wrong key export fails there), list
    archives with the escrowed passphrase.
    live: `borg list` over SSH with the escrowed passphrase (the key is the one in the repo).
    """
    started = utcnow()
    result: dict[str, Any] = {"host": host.name, "method": method, "archives": None}
    try:
        passphrase, key_export = escrow_files(host.name)
        settings = offsite_settings(host, hosts)
        if method == "auto":
            method = "offsite" if settings else "live"
        result["method"] = method
        with tempfile.TemporaryDirectory(prefix="saveos-escrow-") as tmp:
            base = Path(tmp) / "borg"
            if method == "offsite":
                if settings is None:
                    raise SaveOSError(f"{host.name}: no saveos_agent_offsite_bucket in inventory.")
                from saveos_offsite import replicate

                repo = str(Path(tmp) / "repo")
                opens = _OpensWithEscrow(repo, key_export, _borg_env(base, passphrase))
                fetched = replicate.fetch(settings, repo, enough=opens)
                if fetched["status"] != "ok":
                    raise SaveOSError(f"fetching {settings.target} failed: {fetched['message']}")
                result["objects_fetched"] = fetched["objects"]
                result["objects_offsite"] = fetched["objects_offsite"]
                if opens.outcome is None:  # not one segment in the copy
                    raise SaveOSError(f"{settings.target} holds no repository segment.")
                ok, archives, error = opens.outcome
            else:
                where = repo_servers.location(host, hosts or {host.name: host})
                machine = where.server if where else host
                repo = (
                    where.admin_url()
                    if where
                    else (f"ssh://{host.user}@{host.address}:{host.port}{host.repository}")
                )
                env = _borg_env(base, passphrase, rsh=shlex.join(machine.ssh_base()))
                if where:
                    env["BORG_REMOTE_PATH"] = f"runuser -u {where.user} -- borg"
                ok, archives, error, _ = _try_list(repo, env)
        result.update(result="ok" if ok else "fail", archives=archives if ok else None)
        result["message"] = (
            f"escrowed passphrase and key opened the repository ({archives} archives)"
            if ok
            else f"escrowed secrets did not open the repository: {error}"
        )
    except SaveOSError as exc:
        result.update(result="fail", message=exc.message)
    finished = utcnow()
    result.update(
        started_at=iso(started),
        finished_at=iso(finished),
        duration_s=round((finished - started).total_seconds(), 3),
    )
    return result


# ---- recover ---------------------------------------------------------------------------------

_HASH_SCRIPT = r"""
import hashlib, json, os, sys
root = sys.argv[1]
out = {}
for d, dirs, files in os.walk(root):
    for n in files:
        p = os.path.join(d, n)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for b in iter(lambda: fh.read(1 << 20), b""):
                h.update(b)
        out[os.path.relpath(p, root)] = h.hexdigest()
print(json.dumps(out))
"""


def _remote_borg(repo: str, base: str) -> str:
    env = " ".join(f"{k}={v}" for k, v in BORG_QUIET_ENV.items())
    return f"BORG_BASE_DIR={shlex.quote(base)} BORG_PASSPHRASE_FD=0 {env} borg"


class Method(StrEnum):
    """Where `saveos recover` reads the lost host's repository from."""

    auto = "auto"  # the repository server while it answers, else the offsite copy
    server = "server"
    offsite = "offsite"


def recover(
    inventory: Path,
    source: str,
    onto: str,
    target: str,
    archive: str = "latest",
    paths: list[str] | None = None,
    keep_repo: bool = False,
    at: datetime | None = None,
    method: str = Method.auto,
    log=print,
) -> dict[str, Any]:
    """Restore SOURCE's files onto ONTO from its repository server or its offsite copy (the
    copy as it stood at `at`, from object versions), opened with the escrow; verify sha256."""
    t0 = time.monotonic()
    started = utcnow()
    if not target.startswith("/"):
        raise SaveOSError(f"--target {target!r} must be an absolute path on {onto}.")
    paths = [p.lstrip("/") for p in (paths or [])]
    hosts = {h.name: h for h in load_hosts(inventory)}
    for name in (source, onto):
        if name not in hosts:
            raise SaveOSError(f"host {name!r} is not in {inventory}.")
    src_host, new_host = hosts[source], hosts[onto]
    passphrase_file, key_export = escrow_files(source)
    on_server = repo_servers.location(src_host, hosts)
    settings = offsite_settings(src_host, hosts)
    use, lost = _source(method, at, src_host, on_server, settings, log)
    if use == Method.server:
        return _recover_from_server(on_server, new_host, target, archive, paths, passphrase_file,
                                    t0, started, log)  # fmt: skip
    from saveos_cli.retention import offsite

    # A copy the repository server made: the controller holds its S3 credentials, the hosts none.
    by_server = on_server is not None and offsite.enabled(on_server)
    passphrase, work, step = _begin(new_host, source, target, started, passphrase_file)
    repo, base, key_path = f"{work}/repo", f"{work}/borg", f"{work}/key.export"
    try:
        when = f" as of {iso(at)}" if at else ""
        if by_server:
            log(f"fetching {settings.target}{when} onto the controller, then onto {onto} ...")
            fetched = _fetch_via_controller(settings, new_host, repo, at)
        else:
            log(f"fetching {settings.target}{when} onto {onto} ...")
            fetched = _fetch_on_host(new_host, source, repo, at)
        step(
            "copying the escrowed key", f"umask 077 && cat > {q(key_path)}", key_export.read_bytes()
        )
        borg = _remote_borg(repo, base)
        step("importing the escrowed key", f"{borg} key import {q(repo)} {q(key_path)}", passphrase)
        verified = _extract_verified(
            step, borg, repo, archive, paths, target, passphrase, source, log
        )
    finally:
        cleanup = f"rm -f {q(key_path)}; rm -rf {q(base)}"
        if not keep_repo:
            cleanup = f"rm -rf {q(work)}"
        new_host.ssh(cleanup)
    return _outcome(
        source,
        onto,
        target,
        verified,
        t0,
        started,
        bytes_fetched=fetched.get("bytes_downloaded", 0),
        repository=repo if keep_repo else None,
        offsite=settings.target,
        at=at,
        server_lost=lost,
    )


def _source(method: str, at, host: Host, on_server, settings, log) -> tuple[Method, str | None]:
    """Server or offsite copy, per --method and --at, and why not the server when it is lost:
    auto falls back to the offsite copy when the server does not answer or the repository is
    gone there."""
    name = host.name
    if method == Method.server or (method == Method.auto and on_server and at is None):
        if on_server is None:
            raise SaveOSError(f"{name}'s repository is not on a repository server.",
                              hint="Use --method offsite (or auto).")  # fmt: skip
        if at is not None:
            raise SaveOSError("--at reads the offsite copy's object versions: not with "
                              "--method server.")  # fmt: skip
        lost = _server_lost(on_server)
        if lost is None:
            return Method.server, None
        if method == Method.server or settings is None:
            raise SaveOSError(
                f"{name}: its repository server {lost}"
                + ("" if settings else f", and {name} has no offsite copy to fall back on")
                + ".",
                exit_code=EXIT_FLEET,
            )
        log(f"{name}: its repository server {lost}: recovering from the offsite copy")
    else:
        lost = None
    if settings is None:
        raise SaveOSError(
            f"{name}: no offsite copy configured (saveos_repo_server_offsite_bucket on its "
            "repository server, or saveos_agent_offsite_bucket).",
            exit_code=EXIT_FLEET,
        )
    return Method.offsite, lost


def _server_lost(on_server) -> str | None:
    """Why the host's repository on its server cannot be read; None while it can."""
    server = on_server.server
    try:
        proc = server.ssh(f"test -f {q(on_server.path)}/config", timeout=60)
    except SaveOSError:
        return f"{server.name} does not answer (ssh timed out)"
    if proc.returncode == 255:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"{server.name} does not answer ({err[-1] if err else 'ssh failed'})"
    if proc.returncode != 0:
        return f"{server.name} has no repository at {on_server.path}"
    return None


def _fetch_on_host(new_host: Host, source: str, repo: str, at) -> dict[str, Any]:
    """The host-made copy, fetched by the new host with its own offsite config and venv."""
    fetch_cmd = (
        f"PYTHONPATH={q(new_host.layout['agent_pyz'])} "
        f"{q(new_host.layout['offsite_python'])} -m saveos_offsite fetch "
        f"--config {q(new_host.layout['offsite_config'])} --host {q(source)} --dest {q(repo)}"
    )
    if at is not None:
        fetch_cmd += f" --as-of {q(iso(at))}"
    proc = new_host.ssh(fetch_cmd)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        fetched = json.loads(lines[-1])
    except (IndexError, ValueError):
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise SaveOSError(
            f"{new_host.name}: offsite fetch gave no result: {err[-300:]}", exit_code=EXIT_FLEET
        ) from None
    if fetched.get("status") != "ok":
        raise SaveOSError(
            f"{new_host.name}: offsite fetch failed: {fetched.get('message')}",
            exit_code=EXIT_FLEET,
        )
    return fetched


def _fetch_via_controller(settings, new_host: Host, repo: str, at) -> dict[str, Any]:
    """The server-made copy: fetched (and every object's sha256 checked) on the controller, with
    the credentials file only it holds, into a private temp dir; then sent to the new host as a
    tar stream over SSH. The new host never sees an S3 credential."""
    from saveos_offsite import replicate
    from saveos_offsite.settings import OffsiteError

    with tempfile.TemporaryDirectory(prefix="saveos-recover-") as tmp:
        local = Path(tmp) / "repo"
        try:
            fetched = replicate.fetch(settings, str(local), as_of=at)
        except OffsiteError as exc:
            raise SaveOSError(f"{settings.host}: {exc.message}.", exit_code=EXIT_FLEET) from None
        if fetched["status"] != "ok":
            raise SaveOSError(f"{settings.host}: fetching {settings.target} failed: "
                              f"{fetched['message']}", exit_code=EXIT_FLEET)  # fmt: skip
        receive = f"umask 077 && mkdir -p {q(repo)} && tar -xf - -C {q(repo)}"
        argv = [*new_host.ssh_base(), f"{new_host.user}@{new_host.address}", receive]
        with subprocess.Popen(
            ["tar", "-C", str(local), "-cf", "-", "."], stdout=subprocess.PIPE
        ) as pack:
            sent = subprocess.run(argv, stdin=pack.stdout, capture_output=True, timeout=6 * 3600)
            pack.stdout.close()
        if pack.returncode != 0 or sent.returncode != 0:
            err = sent.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SaveOSError(
                f"{new_host.name}: sending the fetched repository failed: "
                f"{err[-1] if err else 'tar exited ' + str(pack.returncode)}",
                exit_code=EXIT_FLEET,
            )
    return fetched


def _outcome(
    source: str,
    onto: str,
    target: str,
    verified: tuple[str, dict, list],
    t0: float,
    started,
    *,
    bytes_fetched: int = 0,
    repository: str | None = None,
    server: str | None = None,
    offsite: str | None = None,
    at=None,
    server_lost: str | None = None,
) -> dict[str, Any]:
    """What `saveos recover` reports, from the offsite copy or a repository server alike
    (`verified`: what _extract_verified found)."""
    archive, expected, mismatched = verified
    return {
        "status": "ok" if not mismatched and expected else "error",
        "from": source,
        "onto": onto,
        "archive": archive,
        "target": target,
        "files_verified": len(expected) - len(mismatched),
        "files_mismatched": mismatched,
        "bytes_fetched": bytes_fetched,
        "repository": repository,
        "method": Method.server.value if server else Method.offsite.value,
        **({"server": server} if server else {"offsite": offsite}),
        "at": iso(at) if at else None,
        **({} if server else {"server_lost": server_lost}),
        "rto_s": round(time.monotonic() - t0, 2),
        "started_at": iso(started),
    }


def _begin(new_host: Host, source: str, target: str, started, passphrase_file: Path):
    """What a recovery does first, from the server or offsite alike: the escrowed passphrase
    (for borg's stdin), the target checked empty, a private work directory on the new host
    named for the source and the start (with `borg/` for borg's own files); and the new
    host's step runner."""
    passphrase = passphrase_file.read_bytes().rstrip(b"\r\n") + b"\n"
    work = f"/var/lib/saveos/recover/{source}-{started.strftime('%Y%m%dT%H%M%S')}"
    step = _stepper(new_host, new_host.name)
    step(
        "checking the target",
        f'test ! -e {q(target)} || test -z "$(ls -A {q(target)})" '
        f"|| {{ echo 'target {target} is not empty' >&2; exit 1; }}",
    )
    step("preparing", f"umask 077 && mkdir -p {q(work)}/borg && mkdir -p {q(target)}")
    return passphrase, work, step


def _stepper(host: Host, name: str):
    def step(what: str, command: str, stdin: bytes | None = None) -> str:
        proc = host.ssh(command, stdin=stdin)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = err[-1] if err else proc.returncode
            raise SaveOSError(f"{name}: {what} failed: {reason}", exit_code=EXIT_FLEET)
        return proc.stdout.decode("utf-8", "replace")

    return step


def _open_on_server(on_server, new_host: Host, work: str, step, log) -> tuple[str, str]:
    """A key made on the new host for this recovery only, granted on the server (the caller
    revokes it), and the server's host key pinned: (repository URL, borg command line)."""
    key = f"{work}/id_ed25519"
    public = step(
        "making a recovery key",
        f"ssh-keygen -q -t ed25519 -N '' -C saveos-recover-{q(on_server.host)} -f {q(key)} "
        f"&& cat {q(key)}.pub",
    ).strip()
    granted = on_server.grant(new_host.name, public)
    log(f"granted {new_host.name} {on_server.host}'s repository on {on_server.server.name}")
    known = on_server.known_hosts_line(granted["host_key"])
    step("pinning the server's host key", f"umask 077 && cat > {q(work)}/known_hosts",
         known.encode())  # fmt: skip
    rsh = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={work}/known_hosts"
        " -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes"
        " -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4"
    )
    borg = f"BORG_RSH={q(rsh)} " + _remote_borg(on_server.url, f"{work}/borg")
    return on_server.url, borg


def _extract_verified(
    step, borg: str, repo: str, archive: str, paths: list[str], target: str,
    passphrase: bytes, source: str, log,
) -> tuple[str, dict[str, str], list[str]]:  # fmt: skip
    """Extract the archive into target on the host, then compare every regular file's sha256
    with the archive's own: (archive, expected digests, mismatched paths)."""
    listing = json.loads(step("listing archives", f"{borg} list --json {q(repo)}", passphrase))
    names = [a["name"] for a in listing.get("archives", [])]
    if not names:
        raise SaveOSError(f"{source}'s repository holds no archive.", exit_code=EXIT_FLEET)
    if archive == "latest":
        archive = names[-1]
    elif archive not in names:
        raise SaveOSError(f"archive {archive!r} is not in {source}'s repository.")
    ref = q(f"{repo}::{archive}")
    quoted_paths = " ".join(q(p) for p in paths)
    log(f"extracting {archive} into {target} ...")
    step("extracting", f"cd {q(target)} && {borg} extract {ref} {quoted_paths}", passphrase)
    items = step(
        "reading the archive's sha256",
        f"{borg} list --json-lines --format '{{sha256}}' {ref} {quoted_paths}",
        passphrase,
    )
    expected = {}
    for line in items.splitlines():
        item = json.loads(line)
        if item.get("type") == "-":
            expected[item["path"]] = item["sha256"]
    actual = json.loads(
        step("hashing the restored files", f"python3 -c {q(_HASH_SCRIPT)} {q(target)}")
    )
    return archive, expected, sorted(p for p, h in expected.items() if actual.get(p) != h)


def _recover_from_server(
    on_server, new_host: Host, target: str, archive: str, paths: list[str],
    passphrase_file: Path, t0: float, started, log,
) -> dict[str, Any]:  # fmt: skip
    """From the repository server: a key made on the new host for this recovery, a separate
    grant line for the source's repository (revoked afterwards, whatever happened), the
    server's host key pinned; extract and verify every file's sha256 against the archive."""
    source, onto = on_server.host, new_host.name
    passphrase, work, step = _begin(new_host, source, target, started, passphrase_file)
    try:
        repo, borg = _open_on_server(on_server, new_host, work, step, log)
        try:
            verified = _extract_verified(
                step, borg, repo, archive, paths, target, passphrase, source, log
            )
        finally:
            on_server.revoke(onto)
            log(f"revoked {onto}'s grant on {on_server.server.name}")
    finally:
        new_host.ssh(f"rm -rf {q(work)}")
    return _outcome(
        source,
        onto,
        target,
        verified,
        t0,
        started,
        server=on_server.server.name,
    )
