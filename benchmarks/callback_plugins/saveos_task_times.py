"""A timing callback for benchmarks/p1_profile.py: per task, its wall time (first host started
to last host done) and each host's time, written as JSON to $SAVEOS_TASK_TIMES when the play
ends. Enabled only by the profile (ANSIBLE_CALLBACKS_ENABLED=saveos_task_times)."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: saveos_task_times
type: aggregate
short_description: per-task and per-host wall times as JSON (SaveOS benchmarks)
description: Writes each task's wall time and each host's time to $SAVEOS_TASK_TIMES.
requirements: [enabled in callbacks_enabled]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "saveos_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.start = time.monotonic()
        self.tasks: list[dict] = []
        self.running: dict[tuple[str, str], float] = {}

    def _task(self, task) -> dict:
        if not self.tasks or self.tasks[-1]["uuid"] != task._uuid:
            now = time.monotonic() - self.start
            self.tasks.append(
                {"uuid": task._uuid, "name": task.get_name(), "start": now, "end": now, "hosts": {}}
            )
        return self.tasks[-1]

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task(task)

    def v2_runner_on_start(self, host, task):
        self.running[(host.get_name(), task._uuid)] = time.monotonic()

    def _done(self, result, status: str) -> None:
        key = (result._host.get_name(), result._task._uuid)
        began = self.running.pop(key, None)
        now = time.monotonic()
        for entry in reversed(self.tasks):
            if entry["uuid"] == key[1]:
                entry["end"] = now - self.start
                if began is not None:
                    entry["hosts"][key[0]] = {"s": now - began, "status": status}
                    profile = result._result.get("profile")
                    if profile:
                        entry["hosts"][key[0]]["profile"] = profile
                break

    def v2_runner_on_ok(self, result):
        self._done(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._done(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._done(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("SAVEOS_TASK_TIMES")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump({"total": time.monotonic() - self.start, "tasks": self.tasks}, fh)
