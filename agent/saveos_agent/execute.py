"""The one module that runs borg: secrets through a pipe, --log-json parsing, rc classification."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

import saveos_rules

from saveos_agent import logsetup
from saveos_agent.errors import AgentError

if TYPE_CHECKING:
    from saveos_agent.config import Config

log = logging.getLogger("saveos_agent.execute")
borg_log = logging.getLogger("saveos_agent.borg")

# Env names that carry secrets; never inherited from the caller, never logged.
_SECRET_ENV = (
    "BORG_PASSPHRASE",
    "BORG_PASSPHRASE_FD",
    "BORG_PASSCOMMAND",
    "BORG_NEW_PASSPHRASE",
)
_LOCK_MSGIDS = {"LockTimeout", "LockFailed", "LockError"}
# borg >= 1.4, BORG_EXIT_CODES=modern: LockError 70, LockErrorT 71, LockFailed 72, LockTimeout 73
_LOCK_RCS = {70, 71, 72, 73}
# What ssh (relayed by borg as "Remote: ..." lines) or borg serve says when a repository server
# cannot be used, and what that means for the operator.
_HOST_KEY = "its SSH host key does not match the one pinned in known_hosts (connection refused)"
_SSH_PROBLEMS = (
    ("Host key verification failed", _HOST_KEY),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", _HOST_KEY),
    ("host key is known for", _HOST_KEY),
    ("Permission denied (publickey", "it refused this host's SSH key"),
    ("Connection refused", "it does not answer"),
    ("Connection timed out", "it does not answer"),
    ("No route to host", "it does not answer"),
    ("Network is unreachable", "it does not answer"),
    ("Could not resolve hostname", "its name does not resolve"),
    ("Timeout, server", "it stopped answering"),
)
_SERVER_MSGIDS = {
    "Repository.StorageQuotaExceeded": "it is full: this host's storage quota is used up",
    "PathNotAllowed": "it does not serve this repository path to this host's key",
}
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def classify(rc: int) -> str:
    """Map a borg exit code to ok / warning / error (legacy 0/1/2 and modern 3-127 codes)."""
    if rc == 0:
        return "ok"
    if rc == 1 or 100 <= rc <= 127:
        return "warning"
    return "error"  # 2, modern errors 3-99, 128+signal, negative (killed by signal)


@dataclass(frozen=True)
class Secrets:
    """How borg opens the repository: the passphrase (a file we pipe through an fd, or a
    command) and, for a repository server, the SSH command that carries the host's key."""

    passphrase_file: Optional[str] = None
    passcommand: Optional[str] = None
    rsh: Optional[str] = None

    def read_passphrase(self) -> Optional[str]:
        if not self.passphrase_file:
            return None
        try:
            with open(self.passphrase_file, encoding="utf-8") as fh:
                value = fh.read().rstrip("\r\n")
        except OSError as exc:
            raise AgentError(
                f"passphrase_file: cannot read {self.passphrase_file}: {exc}"
            ) from None
        if not value:
            raise AgentError(f"passphrase_file: {self.passphrase_file} is empty")
        if len(value.encode()) > 60000:  # must fit in one pipe buffer
            raise AgentError("passphrase_file: passphrase is too long")
        logsetup.add_secret(value)
        return value


def secrets_of(cfg: "Config") -> Secrets:
    """Where the agent config says borg gets the passphrase (and, for a repository server,
    its SSH command)."""
    return Secrets(passphrase_file=cfg.passphrase_file, passcommand=cfg.passcommand, rsh=cfg.rsh)


@dataclass
class BorgResult:
    argv: Sequence[str]
    rc: int
    status: str
    stdout: str
    duration_s: float
    logs: List[Dict[str, Any]] = field(default_factory=list)
    lock_timeout: bool = False
    interrupted: bool = False

    @property
    def messages(self) -> List[str]:
        """Warning and error messages borg logged, in order."""
        return [
            str(entry.get("message", "")).strip()
            for entry in self.logs
            if entry.get("levelname") in ("WARNING", "ERROR", "CRITICAL")
        ]

    @property
    def server_problem(self) -> Optional[str]:
        """Why a repository server could not be used (down, full, refusing the key, another
        host key), in words, with ssh's or borg's own line; None for any other failure."""
        for entry in self.logs:
            text = str(entry.get("message", "")).strip()
            meaning = _SERVER_MSGIDS.get(str(entry.get("msgid", "")))
            if meaning is None and "quota" in text.lower() and "exceeded" in text.lower():
                meaning = _SERVER_MSGIDS["Repository.StorageQuotaExceeded"]
            if meaning is None and text.startswith("Remote: "):
                meaning = next((m for needle, m in _SSH_PROBLEMS if needle in text), None)
            if meaning:
                return f"repository server: {meaning} ({text})"
        return None

    @property
    def error_message(self) -> str:
        problem = self.server_problem
        if problem and self.rc != 0:
            return problem
        errors = [
            str(e.get("message", "")).strip()
            for e in self.logs
            if e.get("levelname") in ("ERROR", "CRITICAL")
        ]
        if errors:
            return errors[-1]
        if self.rc < 0:
            return f"borg killed by signal {-self.rc}"
        return f"borg exited with rc {self.rc}"

    def json(self) -> Any:
        try:
            return json.loads(self.stdout) if self.stdout.strip() else None
        except ValueError:
            raise AgentError(f"borg {self.argv[1]} printed invalid JSON") from None

    def json_lines(self) -> List[Dict[str, Any]]:
        out = []
        for line in self.stdout.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out


# Running borg processes, so a SIGTERM to the agent can stop them cleanly.
_running: "set[subprocess.Popen]" = set()
_running_lock = threading.Lock()
_abort = threading.Event()


def interrupted() -> bool:
    """Has SIGTERM asked the agent to stop (see interrupt_running)?"""
    return _abort.is_set()


def interrupt_running() -> None:
    """Ask every running borg to stop (borg handles SIGTERM: it rolls back and releases locks)."""
    _abort.set()
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGTERM)


def build_env(
    secrets: Secrets, base: Optional[Mapping[str, str]] = None, passphrase_fd: Optional[int] = None
) -> Dict[str, str]:
    env = {k: v for k, v in (base if base is not None else os.environ).items()}
    for name in _SECRET_ENV:
        env.pop(name, None)
    env["BORG_EXIT_CODES"] = "modern"
    # never answer borg's interactive questions with "yes" by accident
    env["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "no"
    env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "no"
    env.setdefault("LANG", "C.UTF-8")
    if secrets.rsh:
        env["BORG_RSH"] = secrets.rsh
    if passphrase_fd is not None:
        env["BORG_PASSPHRASE_FD"] = str(passphrase_fd)
    elif secrets.passcommand:
        env["BORG_PASSCOMMAND"] = secrets.passcommand
    return env


def _handle_stderr_line(
    line: str,
    logs: List[Dict[str, Any]],
    on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> None:
    line = line.rstrip("\n")
    if not line.strip():
        return
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        # plain text (ssh errors, python warnings): keep it as a warning
        entry = {"type": "log_message", "levelname": "WARNING", "message": line}
    if entry.get("type") != "log_message":
        if on_progress is not None and entry.get("type") == "archive_progress":
            on_progress(entry)
        return  # progress lines are not logged
    logs.append(entry)
    level = _LEVELS.get(str(entry.get("levelname")), logging.INFO)
    borg_log.log(level, "%s", str(entry.get("message", "")).strip())


def run(
    argv: Sequence[str],
    secrets: Optional[Secrets] = None,
    *,
    cwd: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    needs_passphrase: bool = True,
    stdout: Optional[int] = None,
    on_progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> BorgResult:
    """Run one borg command to completion; the passphrase never touches argv or env values.

    stdout: an fd that gets borg's output (extract --stdout into a loader), else captured.
    on_progress: called with each `archive_progress` line (borg create --progress --log-json)."""
    secrets = secrets or Secrets()
    passphrase = secrets.read_passphrase() if needs_passphrase else None
    read_fd = write_fd = None
    pass_fds: tuple = ()
    if passphrase is not None:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, passphrase.encode() + b"\n")
        os.close(write_fd)
        pass_fds = (read_fd,)
    full_env = build_env(
        secrets if needs_passphrase else Secrets(rsh=secrets.rsh),
        env,
        read_fd if needs_passphrase else None,
    )
    log.info("running %s", " ".join(argv))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            pass_fds=pass_fds,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except FileNotFoundError:
        raise AgentError(f"borg not found: {argv[0]} (install borgbackup >= 1.2)") from None
    finally:
        if read_fd is not None:
            os.close(read_fd)
    with _running_lock:
        _running.add(proc)
    stdout_chunks: List[str] = []
    reader = threading.Thread(
        target=lambda: proc.stdout and stdout_chunks.append(proc.stdout.read()), daemon=True
    )
    reader.start()
    logs: List[Dict[str, Any]] = []
    try:
        for line in proc.stderr:
            _handle_stderr_line(line, logs, on_progress)
        rc = proc.wait()
        reader.join()
    finally:
        with _running_lock:
            _running.discard(proc)
        if proc.stdout:
            proc.stdout.close()
        proc.stderr.close()
    result = BorgResult(
        argv=tuple(argv),
        rc=rc,
        status=classify(rc),
        stdout="".join(stdout_chunks),
        duration_s=round(time.monotonic() - started, 3),
        logs=logs,
        interrupted=_abort.is_set(),
    )
    result.lock_timeout = rc in _LOCK_RCS or any(e.get("msgid") in _LOCK_MSGIDS for e in logs)
    if (
        rc != 0
        and secrets.rsh
        and result.server_problem is None
        and any(e.get("msgid") == "ConnectionClosedWithHint" for e in logs)
    ):
        # Borg does not always relay ssh's own words before the connection closes: ask ssh.
        logs.extend(_ssh_probe(secrets.rsh, argv))
    log.info("%s finished rc=%d (%s) in %.1fs", argv[1], rc, result.status, result.duration_s)
    return result


_SSH_URL = re.compile(r"^ssh://(?:([^@/]+)@)?(\[[^\]]+\]|[^:/]+)(?::(\d+))?/")


def _ssh_probe(rsh: str, argv: Sequence[str]) -> List[Dict[str, Any]]:
    """ssh's own stderr for the repository's server, as borg's "Remote: " log lines."""
    import shlex

    target = next((m for m in map(_SSH_URL.match, argv) if m), None)
    if target is None:
        return []
    user, host, port = target.groups()
    command = [*shlex.split(rsh), "-p", port or "22", f"{user}@{host}" if user else host, "true"]
    try:
        probe = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [
        {"type": "log_message", "levelname": "WARNING", "message": f"Remote: {line.strip()}"}
        for line in probe.stderr.splitlines()
        if line.strip()
    ]


def borg_version(borg: str = "borg", cache_dir: Optional[str] = None) -> Optional[str]:
    """'1.2.4' for the installed borg, None when borg is missing (saveos_rules.borg_version):
    with `cache_dir`, kept there and read while Borg is unchanged."""
    cache = os.path.join(cache_dir, saveos_rules.BORG_VERSION_CACHE) if cache_dir else None
    return saveos_rules.borg_version(borg, cache)
