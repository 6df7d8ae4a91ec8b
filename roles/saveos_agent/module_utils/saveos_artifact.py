"""The agent zipapp on the controller: whether it is missing, older than its sources, or
current, and its build when it is not (saveos_escrow_state and saveos_artifact both use it).

A module_utils of the role (the collection's plugins/module_utils).
"""

from __future__ import annotations

import os
import subprocess
import sys


def artifact_state(artifact: str, source_dir: str, sha256) -> tuple[str, str | None]:
    """(state, its SHA-256 when current): missing (or empty), outdated (a source .py is newer),
    current."""
    try:
        st = os.stat(artifact)
    except FileNotFoundError:
        return "missing", None
    if st.st_size == 0:
        return "missing", None
    for root, _dirs, names in os.walk(source_dir):
        for name in names:
            if name.endswith(".py") and os.stat(os.path.join(root, name)).st_mtime > st.st_mtime:
                return "outdated", None
    return "current", sha256(artifact)


def ensure_artifact(module, artifact: str, source_dir: str, python: str | None) -> tuple:
    """(state, sha256, changes): builds the zipapp when it is not current (not in check mode,
    where the state is the one found)."""
    state, sha256 = artifact_state(artifact, source_dir, module.sha256)
    if state == "current":
        return state, sha256, []
    changes = [f"{artifact}: built ({state})"]
    if module.check_mode:
        return state, sha256, changes
    os.makedirs(os.path.dirname(artifact), exist_ok=True)
    built = subprocess.run(
        [python or sys.executable, os.path.join(source_dir, "build.py"), "--out", artifact],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if built.returncode != 0:
        module.fail_json(msg=f"building the agent zipapp failed: {built.stderr[-2000:]}")
    # Just built from the sources: current, whatever their mtimes say.
    return "current", module.sha256(artifact), changes
