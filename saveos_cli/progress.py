"""Turn ansible-runner events into per-host progress, and show it (Rich Live or plain lines).

`apply_event` is a pure reducer: the same events always give the same state, so it is tested
on events recorded from a real run (tests/data/runner_events.json).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

MSG_LIMIT = 400


@dataclass(frozen=True)
class HostProgress:
    name: str
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    ignored: int = 0
    started: datetime | None = None
    last: datetime | None = None

    @property
    def elapsed(self) -> float:
        if self.started is None or self.last is None:
            return 0.0
        return max(0.0, (self.last - self.started).total_seconds())

    @property
    def outcome(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "ok"


@dataclass(frozen=True)
class Failure:
    host: str
    task: str
    msg: str
    unreachable: bool = False


@dataclass(frozen=True)
class RunState:
    hosts: Mapping[str, HostProgress] = field(default_factory=dict)
    play: str = ""
    task: str = ""
    failures: tuple[Failure, ...] = ()
    stats: Mapping[str, Mapping[str, int]] | None = None


def _when(event: Mapping) -> datetime | None:
    created = event.get("created")
    if not created:
        return None
    try:
        return datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return None


def _command_detail(res: Mapping) -> str:
    stdout = str(res.get("stdout") or "").strip()
    try:
        parsed = json.loads(stdout) if stdout.startswith("{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("message"):
        return str(parsed["message"])
    for text in (res.get("stderr"), stdout):
        lines = [line for line in str(text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def failure_message(res: Mapping | None) -> str:
    """The one line an operator needs from a failed result: its msg, not the whole dump."""
    res = res or {}
    msg = res.get("msg")
    results = res.get("results")
    if isinstance(results, list):  # a loop: the first failed item says more than the summary
        for item in results:
            if isinstance(item, Mapping) and item.get("failed"):
                msg = item.get("msg") or msg
                break
    if not msg:
        msg = res.get("stderr") or res.get("stdout") or res.get("censored") or "failed"
        lines = [line for line in str(msg).splitlines() if line.strip()]
        msg = lines[-1] if lines else "failed"
    elif msg == "non-zero return code":
        # A command's own words beat ansible's summary (e.g. saveos-agent --json's "message").
        detail = _command_detail(res)
        msg = f"{msg} ({res.get('rc')}): {detail}" if detail else msg
    text = " ".join(str(msg).split())
    return text if len(text) <= MSG_LIMIT else text[: MSG_LIMIT - 1] + "…"


_STATS_FIELDS = (
    ("ok", "ok"),
    ("changed", "changed"),
    ("failures", "failed"),
    ("dark", "unreachable"),
    ("skipped", "skipped"),
    ("ignored", "ignored"),
)


def _bump(state: RunState, host: str, when: datetime | None, **changes) -> RunState:
    prev = state.hosts.get(host) or HostProgress(name=host, started=when)
    updates = {}
    for key, value in changes.items():
        if key in {"ok", "changed", "failed", "unreachable", "skipped", "ignored"}:
            updates[key] = getattr(prev, key) + value
        else:
            updates[key] = value
    if when is not None:
        updates["last"] = when
        if prev.started is None:
            updates["started"] = when
    hosts = dict(state.hosts)
    hosts[host] = dataclasses.replace(prev, **updates)
    return dataclasses.replace(state, hosts=hosts)


def apply_event(state: RunState, event: Mapping) -> RunState:
    """Fold one runner event into the state; unknown events leave it unchanged."""
    kind = event.get("event", "")
    data = event.get("event_data") or {}
    host = data.get("host")
    task = data.get("task") or ""
    when = _when(event)

    if kind == "playbook_on_play_start":
        return dataclasses.replace(state, play=data.get("play", ""))
    if kind == "playbook_on_task_start":
        return dataclasses.replace(state, task=task)
    if kind == "playbook_on_stats":
        keys = ("ok", "changed", "failures", "dark", "skipped", "ignored", "rescued", "processed")
        stats = {k: dict(data.get(k) or {}) for k in keys}
        # The stats are the truth: a no_log task's event is censored down to {"censored": …}
        # and loses its `changed` flag, so the running counts settle on Ansible's own at the end.
        hosts = dict(state.hosts)
        for name, prev in state.hosts.items():
            hosts[name] = dataclasses.replace(
                prev, **{field: stats[key].get(name, 0) for key, field in _STATS_FIELDS}
            )
        return dataclasses.replace(state, stats=stats, hosts=hosts)
    if not host:
        return state
    if kind == "runner_on_start":
        return _bump(state, host, when, task=task)
    if kind == "runner_on_ok":
        changed = 1 if (data.get("res") or {}).get("changed") else 0
        return _bump(state, host, when, task=task, ok=1, changed=changed)
    if kind == "runner_on_skipped":
        return _bump(state, host, when, task=task, skipped=1)
    if kind == "runner_on_failed":
        res = data.get("res") or {}
        if data.get("ignore_errors"):
            # Ansible counts an ignored failure as ok + ignored (and changed when it changed).
            changed = 1 if res.get("changed") else 0
            return _bump(state, host, when, task=task, ok=1, ignored=1, changed=changed)
        state = _bump(state, host, when, task=task, failed=1)
        failure = Failure(host, task, failure_message(res))
        return dataclasses.replace(state, failures=(*state.failures, failure))
    if kind == "runner_on_unreachable":
        state = _bump(state, host, when, task=task, unreachable=1)
        failure = Failure(host, task, failure_message(data.get("res")), unreachable=True)
        return dataclasses.replace(state, failures=(*state.failures, failure))
    return state


def reduce_events(events: Iterable[Mapping], state: RunState | None = None) -> RunState:
    state = state or RunState()
    for event in events:
        state = apply_event(state, event)
    return state


def failed_hosts(stats: Mapping[str, Mapping[str, int]] | None) -> list[str]:
    if not stats:
        return []
    bad = set(stats.get("failures") or {}) | set(stats.get("dark") or {})
    return sorted(h for h in bad if (stats["failures"].get(h, 0) or stats["dark"].get(h, 0)))


# --- display ---------------------------------------------------------------------------------

_OUTCOME_STYLE = {"ok": "green", "failed": "bold red", "unreachable": "bold magenta"}


def _fmt_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _attention(h: HostProgress) -> tuple:
    """Sort key for a crowded table: trouble first, then the hosts heard from most recently."""
    trouble = h.failed + h.unreachable
    last = h.last.timestamp() if h.last else 0.0
    return (not trouble, -last, h.name)


def progress_table(state: RunState, title: str = "", max_rows: int | None = None) -> Table:
    """One row per host, by name; past max_rows hosts, the failed and unreachable ones, then the
    most recently active, and one row summing up the others."""
    table = Table(title=title or None, title_justify="left", expand=False)
    for col in ("host", "current task", "ok", "changed", "failed", "unreach", "skipped", "elapsed"):
        table.add_column(col, justify="right" if col not in ("host", "current task") else "left")
    hosts = sorted(state.hosts.values(), key=lambda h: h.name)
    rest: list[HostProgress] = []
    if max_rows is not None and len(hosts) > max_rows:
        shown = max(max_rows - 1, 1)
        hosts.sort(key=_attention)
        hosts, rest = sorted(hosts[:shown], key=lambda h: h.name), hosts[shown:]
    for h in hosts:
        table.add_row(
            Text(h.name, style=_OUTCOME_STYLE[h.outcome]),
            h.task,
            str(h.ok),
            Text(str(h.changed), style="yellow" if h.changed else ""),
            Text(str(h.failed), style="red" if h.failed else ""),
            Text(str(h.unreachable), style="magenta" if h.unreachable else ""),
            str(h.skipped),
            _fmt_elapsed(h.elapsed),
        )
    if rest:
        table.add_row(
            Text(f"+ {len(rest):,} more hosts", style="dim"),
            "",
            *(
                str(sum(getattr(h, f) for h in rest))
                for f in ("ok", "changed", "failed", "unreachable", "skipped")
            ),
            "",
        )
    return table


class LiveDisplay:
    """A Rich Live table, redrawn at most REDRAW_S apart however fast events arrive.

    Drawing is what costs (a full table per redraw): on 200 hosts, redrawing on every event
    made the display minutes late. The table keeps to the terminal's height.
    """

    REDRAW_S = 0.2

    def __init__(self, console: Console, title: str):
        self.console = console
        self.title = title
        self.state = RunState()
        self._drawn = 0.0
        self._live = Live(self._table(), console=console, auto_refresh=False)

    def _table(self) -> Table:
        # Title, header, borders and the recap under it take about ten lines.
        return progress_table(self.state, self.title, max_rows=max(self.console.height - 10, 5))

    def _draw(self) -> None:
        self._live.update(self._table(), refresh=True)
        self._drawn = time.monotonic()

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw()  # the last events' counts
        self._live.__exit__(None, None, None)

    def __call__(self, event: Mapping) -> None:
        self.state = apply_event(self.state, event)
        if time.monotonic() - self._drawn >= self.REDRAW_S:
            self._draw()


class PlainDisplay:
    """For CI and cron: one line per task result, no cursor tricks."""

    def __init__(self, console: Console, title: str):
        self.console = console
        self.title = title
        self.state = RunState()

    def __enter__(self) -> PlainDisplay:
        self.console.print(self.title, highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, event: Mapping) -> None:
        before = self.state
        self.state = apply_event(self.state, event)
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host, task = data.get("host"), data.get("task", "")
        if kind == "playbook_on_task_start":
            self.console.print(f"TASK {task}", highlight=False, markup=False)
        elif kind in (
            "runner_on_ok",
            "runner_on_failed",
            "runner_on_unreachable",
            "runner_on_skipped",
        ):
            label = {
                "runner_on_ok": "changed" if (data.get("res") or {}).get("changed") else "ok",
                "runner_on_failed": "ignored" if data.get("ignore_errors") else "failed",
                "runner_on_unreachable": "unreachable",
                "runner_on_skipped": "skipped",
            }[kind]
            line = f"  {host}: {label}"
            if len(self.state.failures) > len(before.failures):
                line += f": {self.state.failures[-1].msg}"
            self.console.print(line, highlight=False, markup=False)


def display_for(console: Console, title: str) -> LiveDisplay | PlainDisplay:
    return LiveDisplay(console, title) if console.is_terminal else PlainDisplay(console, title)


def print_recap(console: Console, state: RunState) -> None:
    """The final recap comes from the runner's stats; failures print their message only."""
    stats = state.stats
    if not stats:
        return
    hosts = sorted(set().union(*(set(v) for v in stats.values())))
    table = Table(title="recap", title_justify="left")
    for col in ("host", "ok", "changed", "failed", "unreachable", "skipped", "ignored"):
        table.add_column(col, justify="left" if col == "host" else "right")
    for host in hosts:
        failed = stats["failures"].get(host, 0)
        dark = stats["dark"].get(host, 0)
        style = "bold magenta" if dark else "bold red" if failed else "green"
        table.add_row(
            Text(host, style=style),
            str(stats["ok"].get(host, 0)),
            str(stats["changed"].get(host, 0)),
            str(failed),
            str(dark),
            str(stats["skipped"].get(host, 0)),
            str(stats["ignored"].get(host, 0)),
        )
    console.print(table)
    for f in state.failures:
        kind = "unreachable" if f.unreachable else "failed"
        console.print(
            Text.assemble((f"{f.host}", "bold"), f" {kind} at ", (f.task, "italic"), f": {f.msg}")
        )
