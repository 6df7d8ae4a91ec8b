"""Database dumps streamed into the backup's own `borg create`: one FIFO per database.

The FIFOs live in a 0700 directory holding a tag file that `--exclude-if-present` names, so
borg reads each FIFO once, as the path given on its command line, and never again when a
source contains the directory. A dump starts only when borg opens its FIFO (databases are read
one after the other, in command-line order) and writes into it as its stdout (nothing on disk;
the kernel counts the bytes); the manifest FIFO, last on the command line, records how every
dump ended, so a restore knows a dump cut short from a whole one. Nothing is left behind: the
FIFOs and the directory are removed whatever happened.

Over 400 lines on purpose: the FIFOs, the threads that feed them and the manifest are one
mechanism that starts, fails and cleans up together.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from saveos_agent import databases as dbs
from saveos_agent.errors import AgentError

log = logging.getLogger("saveos_agent.dumps")

TAG = ".saveos-dumps"
MANIFEST = "manifest.json"
CHUNK = 1 << 20
STDERR_KEEP = 4000
_splice = getattr(os, "splice", None)  # Linux, Python >= 3.10: no copy through user space


def run_client(
    db: dbs.Database, argv: Sequence[str], sql: str = "", timeout: float = 600
) -> Tuple[int, str, str]:
    """Run a short client command (a query, CREATE/DROP DATABASE): rc, stdout, stderr."""
    try:
        out = subprocess.run(
            list(argv),
            input=sql,
            capture_output=True,
            text=True,
            env=dbs.env(db),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return 127, "", f"{argv[0]} not found: install the {db.type} client"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} timed out after {timeout:g} s"
    return out.returncode, out.stdout, out.stderr


def first_error(stderr: str, rc: int, program: str) -> str:
    """The client's own words: its error lines (last few), else how it ended."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()] or lines
    text = "; ".join(errors[-3:])
    if rc < 0:
        ended = f"{program} killed by signal {-rc}"
        return f"{ended}: {text}" if text else ended
    return text or f"{program} exited with rc {rc}"


def expand(databases: Sequence[dbs.Database]) -> Tuple[List[dbs.DumpItem], List[Dict[str, Any]]]:
    """Every stream the declared entries stand for (an `all` asks its server which databases it
    holds), and an error record for each entry that could not say."""
    items: List[dbs.DumpItem] = []
    errors: List[Dict[str, Any]] = []
    names = set()
    for db in databases:
        if db.name != dbs.ALL:
            batch = [dbs.DumpItem(db, db.name)]
        else:
            argv = dbs.list_argv(db)
            rc, out, err = run_client(db, argv, timeout=120)
            if rc != 0:
                errors.append(_failed(db, db.name, first_error(err, rc, argv[0])))
                continue
            batch = [dbs.DumpItem(db.one(n), n) for n in out.split() if n]
            if db.type == "postgresql":
                batch.insert(0, dbs.DumpItem(db.one(dbs.GLOBALS), dbs.GLOBALS, kind=dbs.GLOBALS))
        for item in batch:
            if item.kind != dbs.GLOBALS and not dbs.NAME.match(item.name):
                errors.append(_failed(db, item.name, "name has characters SaveOS cannot use"))
            elif item.file_name in names:
                errors.append(_failed(db, item.name, "dumped twice (declared by two entries)"))
            else:
                names.add(item.file_name)
                items.append(item)
    return items, errors


def _failed(db: dbs.Database, name: str, message: str) -> Dict[str, Any]:
    return {"type": db.type, "name": name, "format": db.format, "size": 0, "status": "error",
            "message": message[:1000]}  # fmt: skip


def _written(pid: int) -> Optional[int]:
    """Bytes a process (and the children it reaped) wrote, by the kernel's I/O accounting;
    readable until the process is reaped. None where /proc has no such file."""
    try:
        with open(f"/proc/{pid}/io", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# The dump writes straight into the FIFO (as `pg_dump | borg create -` would), its size counted
# by the kernel: relaying the bytes cost the agent ~0.9 s of CPU per GB of pg_dump output (a
# wakeup per small write). Without /proc/PID/io the agent relays and counts them itself.
DIRECT = _written(os.getpid()) is not None


class _Stream(threading.Thread):
    """Waits for borg to open the FIFO, then runs the dump with the FIFO as its stdout."""

    def __init__(self, item: dbs.DumpItem, fifo: str, abandon: threading.Event):
        super().__init__(daemon=True, name=f"dump-{item.name}")
        self.item, self.fifo, self.abandon = item, fifo, abandon
        self.size = 0
        self.rc: Optional[int] = None
        self.error = ""
        self.opened = threading.Event()
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = self.duration_s = 0.0
        self._fd = -1

    def run(self) -> None:
        try:
            self._fd = os.open(self.fifo, os.O_WRONLY)  # blocks until borg opens it for reading
        except OSError as exc:
            self.error = f"cannot open the dump FIFO: {exc.strerror}"
            return
        self.opened.set()
        try:
            if self.abandon.is_set():
                self.error = "not dumped: the backup stopped before borg read it"
                return
            self._dump()
        finally:
            self._close()  # borg sees the end of this file

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _dump(self) -> None:
        argv = dbs.dump_argv(self.item)
        log.info("dumping %s: %s", self.item.db.key, " ".join(argv))
        self.started_at = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._fd if DIRECT else subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dbs.env(self.item.db),
            )
        except OSError as exc:
            self.rc, self.error = 127, f"cannot run {argv[0]}: {exc.strerror}"
            return
        if DIRECT:
            self._close()  # the dump holds the FIFO now: borg sees its end when the dump ends
        err_chunks: List[bytes] = []
        reader = threading.Thread(
            target=lambda: err_chunks.append(self.proc.stderr.read()), daemon=True
        )
        reader.start()
        broken = False
        if DIRECT:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)  # not reaped yet
            written = _written(self.proc.pid)
        else:
            try:
                self.size = _pump(self.proc.stdout.fileno(), self._fd)
            except OSError as exc:  # borg closed its end (it stopped): stop the dump too
                broken = exc.errno == errno.EPIPE
                if not broken:
                    raise
                with contextlib.suppress(OSError):
                    self.proc.kill()
        self.rc = self.proc.wait()
        reader.join()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc.stderr.close()
        self.duration_s = round(time.monotonic() - self.started_at, 3)
        raw = b"".join(err_chunks)
        if DIRECT:
            # what it wrote, less its messages on stderr: the dump's bytes in the FIFO
            self.size = max(0, (written or 0) - len(raw))
            broken = self.rc == -signal.SIGPIPE
        stderr = raw.decode("utf-8", "replace")[-STDERR_KEEP:]
        if broken:
            self.error = "borg stopped reading the dump"
        elif self.rc != 0:
            self.error = first_error(stderr, self.rc, os.path.basename(argv[0]))

    def record(self) -> Dict[str, Any]:
        ok = self.rc == 0 and not self.error
        out = {
            "type": self.item.db.type,
            "name": self.item.name,
            "format": self.item.format,
            "size": self.size,
            "status": "ok" if ok else "error",
            "file": self.item.file_name,
        }
        if self.item.kind == dbs.GLOBALS:
            out["kind"] = dbs.GLOBALS
        if not ok:
            out["message"] = (self.error or "the dump did not finish")[:1000]
        return out


def _pump(src: int, dst: int) -> int:
    total = 0
    if _splice is not None:
        with contextlib.suppress(OSError):
            # splice needs a pipe at one end: both are; fall back on any refusal (EINVAL)
            while True:
                moved = _splice(src, dst, CHUNK)
                if not moved:
                    return total
                total += moved
        if total:
            raise OSError(errno.EPIPE, "splice failed part-way")
    while True:
        chunk = os.read(src, CHUNK)
        if not chunk:
            return total
        view = memoryview(chunk)
        while view:
            written = os.write(dst, view)
            view = view[written:]
        total += len(chunk)


def _is_special(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode)


def special_files(sources: Sequence[str], skip: str) -> List[str]:
    """FIFOs and device files under the sources (and symlinks to them): with --read-special
    borg would read them as files (a FIFO blocks it, a disk is read whole), so each is excluded.
    `skip` (the dump directory) is left to --exclude-if-present."""
    found: List[str] = []
    skip = os.path.realpath(skip)
    stack = list(sources)
    while stack:
        path = stack.pop()
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(path) == skip:
                continue
            with contextlib.suppress(OSError), os.scandir(path) as entries:
                stack.extend(e.path for e in entries)
        elif _is_special(st.st_mode):
            found.append(path)
        elif stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(OSError):
                if _is_special(os.stat(path).st_mode):
                    found.append(path)
    return sorted(found)


class DumpSession:
    """Create the FIFOs and start their writers (`paths` go first on borg's command line); after
    borg returns, `finish()` says how every dump ended; `close()` removes everything."""

    def __init__(self, dump_dir: str, databases: Sequence[dbs.Database]):
        self.dir = dump_dir
        self.databases = list(databases)
        self.abandon = threading.Event()
        self.streams: List[_Stream] = []
        self.errors: List[Dict[str, Any]] = []
        self.manifest_thread: Optional[threading.Thread] = None
        self.manifest_opened = threading.Event()

    def open(self) -> List[str]:
        remove_dir(self.dir)  # what a killed agent may have left
        os.makedirs(self.dir, mode=0o700)
        os.chmod(self.dir, 0o700)
        with open(os.path.join(self.dir, TAG), "w", encoding="utf-8") as fh:
            fh.write("SaveOS dump FIFOs: borg reads them by name, never by walking here\n")
        items, self.errors = expand(self.databases)
        paths = []
        for item in items:
            fifo = os.path.join(self.dir, item.file_name)
            os.mkfifo(fifo, 0o600)
            stream = _Stream(item, fifo, self.abandon)
            stream.start()
            self.streams.append(stream)
            paths.append(fifo)
        manifest = os.path.join(self.dir, MANIFEST)
        os.mkfifo(manifest, 0o600)
        self.manifest_thread = threading.Thread(
            target=self._write_manifest, args=(manifest,), daemon=True
        )
        self.manifest_thread.start()
        return [*paths, manifest]

    def records(self) -> List[Dict[str, Any]]:
        return [s.record() for s in self.streams] + list(self.errors)

    def _write_manifest(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError:
            return
        self.manifest_opened.set()
        try:
            for stream in self.streams:  # borg has read them all: they are ending
                stream.join()
            body = {"saveos_dumps": 1, "databases": self.records()}
            if not self.abandon.is_set():
                with contextlib.suppress(OSError):
                    os.write(fd, json.dumps(body, indent=1, sort_keys=True).encode() + b"\n")
        finally:
            os.close(fd)

    def finish(self) -> List[Dict[str, Any]]:
        """After borg exited: release writers borg never reached, wait for all, report."""
        self.abandon.set()
        waiting = [(s.fifo, s.opened) for s in self.streams]
        waiting.append((os.path.join(self.dir, MANIFEST), self.manifest_opened))
        for fifo, opened in waiting:
            if not opened.is_set():
                with contextlib.suppress(OSError):
                    # opening the read end lets the writer's open return; it then sees abandon
                    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                    opened.wait(5)
                    os.close(fd)
        for stream in self.streams:
            if stream.proc is not None and stream.is_alive():
                with contextlib.suppress(OSError):
                    stream.proc.kill()
            stream.join(30)
        if self.manifest_thread is not None:
            self.manifest_thread.join(30)
        return self.records()

    def close(self) -> None:
        remove_dir(self.dir)


def remove_dir(path: str) -> None:
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        raise AgentError(f"dump_dir {path} exists and is not a directory")
    shutil.rmtree(path)


def read_manifest(text: str) -> List[Dict[str, Any]]:
    try:
        data = json.loads(text)
    except ValueError:
        raise AgentError("the archive's dump manifest is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("databases"), list):
        raise AgentError("the archive's dump manifest has no database list")
    return [d for d in data["databases"] if isinstance(d, dict)]


@contextlib.contextmanager
def for_backup(cfg: Any) -> Iterator[Optional[DumpSession]]:
    """The dump session of one backup (None without declared databases), always cleaned up."""
    if not cfg.databases:
        yield None
        return
    session = DumpSession(cfg.dump_dir, cfg.databases)
    try:
        yield session
    finally:
        session.finish()
        session.close()


def create_options(cfg: Any, session: Optional[DumpSession]) -> Dict[str, Any]:
    """What `borg create` needs to read the FIFOs: the paths (first), --read-special, the tag
    that keeps borg out of the dump directory, and every other special file excluded."""
    if session is None:
        return {"sources": list(cfg.sources), "excludes": list(cfg.excludes)}
    paths = session.open()
    specials = special_files(cfg.sources, session.dir)
    return {
        "sources": [*paths, *cfg.sources],
        "excludes": [*cfg.excludes, *(f"pp:{p}" for p in specials)],
        "read_special": True,
        "exclude_if_present": [TAG],
    }


def failures(records: Sequence[Dict[str, Any]]) -> List[str]:
    return [
        f"database {r['type']}/{r['name']}: {r.get('message', 'failed')}"
        for r in records
        if r.get("status") != "ok"
    ]


def failed_message(failed: Sequence[str], archive: str, nfiles: int) -> str:
    return "; ".join(failed) + f" (archive {archive} was kept: {nfiles} files)"


def report_record(record: Dict[str, Any]) -> Dict[str, Any]:
    """What the API stores of one dump: name, type, format, size, status, message."""
    keys = ("name", "type", "format", "size", "status", "message")
    return {k: record[k] for k in keys if k in record}
