"""Run a SaveOS playbook with ansible-runner and stream its events to the caller.

Traps this module exists to avoid (ansible-runner 2.4):
- it reuses `private_data_dir/env/*` between runs: every run gets a fresh temp dir, removed after;
- it finds `ansible-playbook` on PATH only (rc 127 otherwise): the venv's bin dir goes first;
- an `event_handler` returning None keeps events off disk and leaves `stats` empty: return True;
- secrets go in `envvars` with `suppress_env_files=True` so no env/ file holds them; the runner
  still dumps the whole environment into `artifacts/<ident>/command`, which we delete before
  ansible-playbook starts (status "running").
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from saveos_cli.errors import SaveOSError

# The playbooks, the role and the agent sources: package data of an installed wheel, links to
# the checkout's own directories in a source tree (resolved, so Ansible sees the real paths).
SHARE = Path(__file__).resolve().parent / "share"
PLAYBOOK_DIR = (SHARE / "playbooks").resolve()
ANSIBLE_CFG = (SHARE / "ansible.cfg").resolve()
ROLES_DIR = (SHARE / "roles").resolve()
IDENT = "run"


@dataclass
class RunResult:
    status: str  # successful / failed / canceled / timeout
    rc: int | None
    stats: dict | None
    canceled: bool
    stdout_tail: list[str] = field(default_factory=list)


def _descendants(root: int) -> list[int]:
    """Pids below `root` (Linux /proc): ansible's workers run in sessions of their own, so the
    runner's kill of ansible-playbook's process group leaves them and their commands behind."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@contextmanager
def _ctrl_c_sets(cancel: threading.Event):
    """Ctrl-C sets `cancel` instead of raising KeyboardInterrupt wherever the main thread is
    (in the middle of an event's rendering, or inside the queue's locking); the loop then ends
    the run in one place. A SIGINT the parent ignores (a background job) stays ignored."""
    mine = threading.current_thread() is threading.main_thread()
    if not mine or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, lambda _sig, _frame: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _bin_dir() -> str:
    return str(Path(sys.executable).parent)


def _import_runner():
    try:
        import ansible_runner
    except ImportError as exc:
        raise SaveOSError(
            "ansible-runner is not installed in this Python environment.",
            hint=f"Install it: {sys.executable} -m pip install 'ansible-runner>=2.3'",
        ) from exc
    return ansible_runner


def resolve_playbook(name: str | Path) -> Path:
    path = Path(name)
    if not path.is_absolute():
        path = PLAYBOOK_DIR / path
    if not path.is_file():
        raise SaveOSError(f"playbook {path} is missing from this SaveOS installation.")
    return path


def check_inventory(inventory: str | Path) -> Path:
    path = Path(inventory)
    if not path.exists():
        raise SaveOSError(f"inventory {path} does not exist.")
    return path.resolve()


def run_playbook(
    playbook: str | Path,
    inventory: str | Path,
    *,
    on_event: Callable[[Mapping], None],
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    forks: int | None = None,
    verbosity: int = 0,
    extravars: dict | None = None,
    secret_env: Mapping[str, str] | None = None,
    keep_dir: Path | None = None,
) -> RunResult:
    """Run one playbook; `on_event` is called in this thread for every event, in order.

    Ctrl-C cancels the run (ansible-playbook is terminated) and returns a result with
    `canceled=True` so the caller can say what was left unfinished. `keep_dir` (tests) copies the
    private data dir there before it is removed.
    """
    ansible_runner = _import_runner()
    playbook_path = resolve_playbook(playbook)
    inventory_path = check_inventory(inventory)
    bin_dir = _bin_dir()
    path_env = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if not shutil.which("ansible-playbook", path=path_env):
        raise SaveOSError(
            "ansible-playbook is not on PATH.",
            hint=f"Install ansible-core into {sys.prefix} (pip install 'ansible-core>=2.15').",
        )
    envvars = {
        "PATH": path_env,
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_NOCOLOR": "1",
        **(secret_env or {}),
    }
    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    doomed: list[int] = []
    terminated = False

    def event_handler(event: dict) -> bool:
        events.put(event)
        return True  # keep it: runner.stats is built from the stored events

    def status_handler(status: dict, runner_config) -> None:
        if status.get("status") == "running":
            # The runner dumped the whole environment (secrets too) here; ansible never reads it.
            Path(runner_config.artifact_dir, "command").unlink(missing_ok=True)

    private_dir = tempfile.mkdtemp(prefix="saveos-run-")
    try:
        thread, runner = ansible_runner.run_async(
            private_data_dir=private_dir,
            ident=IDENT,
            project_dir=str(playbook_path.parent),
            playbook=playbook_path.name,
            inventory=str(inventory_path),
            limit=limit or None,
            forks=forks,
            verbosity=verbosity or None,
            cmdline=cmdline or None,
            extravars=extravars or None,
            envvars=envvars,
            quiet=True,
            suppress_env_files=True,
            event_handler=event_handler,
            status_handler=status_handler,
            cancel_callback=cancel.is_set,
        )
        with _ctrl_c_sets(cancel):
            while thread.is_alive() or not events.empty():
                if cancel.is_set() and not terminated:
                    # the runner polls `cancel` and kills ansible-playbook's group; its
                    # workers (sessions of their own) and their commands are ours to end
                    doomed, terminated = _descendants(os.getpid()), True
                    _signal_all(doomed, signal.SIGTERM)
                try:
                    try:
                        event = events.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    on_event(event)
                except KeyboardInterrupt:  # when _ctrl_c_sets could not take SIGINT over
                    cancel.set()
        thread.join()
        if cancel.is_set():
            _signal_all(doomed, signal.SIGKILL)  # whatever ignored SIGTERM
        stdout = Path(private_dir, "artifacts", IDENT, "stdout")
        tail = stdout.read_text(errors="replace").splitlines()[-20:] if stdout.is_file() else []
        if keep_dir is not None:
            shutil.copytree(private_dir, keep_dir, dirs_exist_ok=True)
        return RunResult(
            status=runner.status,
            rc=runner.rc,
            stats=runner.stats,
            canceled=runner.canceled or cancel.is_set(),
            stdout_tail=tail,
        )
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
