"""Re-record tests/data/runner_events.json from a real ansible-runner run of the tiny playbook.

PATH=/work/venv/bin:$PATH SAVEOS_TEST_LAB_NET=127.0.5 python tests/data/record_runner_events.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE / "tiny")]

from make_inventory import write_inventory  # noqa: E402

from saveos_cli.runner import run_playbook  # noqa: E402

# Fields that only describe the recording machine; the reducer never reads them.
DROP = (
    "stdout",
    "pid",
    "runner_ident",
    "parent_uuid",
    "playbook_uuid",
    "uuid",
    "start_line",
    "end_line",
)


def main() -> None:
    net = os.environ.get("SAVEOS_TEST_LAB_NET", "127.0.0")
    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        inv = write_inventory(Path(tmp) / "inventory.json", f"{net}.99", 18599)
        result = run_playbook(
            HERE / "tiny" / "playbook.yml",
            inv,
            on_event=events.append,
            secret_env={"SAVEOS_TINY_SECRET": "tiny-secret-value"},
        )
    for event in events:
        for key in DROP:
            event.pop(key, None)
        for key in ("playbook", "uuid", "playbook_uuid", "task_uuid", "task_path"):
            event.get("event_data", {}).pop(key, None)
    out = {"stats": result.stats, "status": result.status, "rc": result.rc, "events": events}
    (HERE / "runner_events.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(events)} events, status {result.status}, rc {result.rc}")


if __name__ == "__main__":
    main()
