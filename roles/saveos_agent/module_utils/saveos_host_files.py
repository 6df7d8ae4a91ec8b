"""The saveos_agent_state module's file converger: directories and files owned by root with the
mode asked for, each change kept (with a --diff entry for what holds no secret).

A module_utils of the role (the collection's plugins/module_utils): it runs on the host, with
the host's Python (>= 3.9).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saveos_rules import write_atomically


class Host:
    """Converges items one at a time and keeps what changed (or, in check mode, would)."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self.check = module.check_mode
        self.changes: list[str] = []
        self.diffs: list[dict] = []

    def changed(self, what: str, diff: dict | None = None) -> None:
        self.changes.append(what)
        if diff is not None and self.module._diff:
            self.diffs.append(diff)

    def fail(self, msg: str, **extra) -> None:
        self.module.fail_json(msg=msg, changed=bool(self.changes), changes=self.changes, **extra)

    def ensure_directory(self, path: str, mode: str) -> None:
        want = int(mode, 8)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.changed(f"{path}: created", _diff(path, "absent\n", f"directory {mode}\n"))
            if not self.check:
                os.makedirs(path, mode=want, exist_ok=True)
                os.chown(path, 0, 0)
                os.chmod(path, want)
            return
        if not stat.S_ISDIR(st.st_mode):
            self.fail(f"{path} is not a directory: remove it, then deploy again")
        self.owner_mode(path, st, want)

    def owner_mode(self, path: str, st: os.stat_result, want: int) -> None:
        if (st.st_uid, st.st_gid) != (0, 0):
            self.changed(f"{path}: owner {_owner(st)}, want root:root")
            if not self.check:
                os.chown(path, 0, 0, follow_symlinks=False)
        if stat.S_IMODE(st.st_mode) != want:
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
            self.changed(
                f"{path}: mode {mode}, want {want:04o}",
                _diff(path, f"mode {mode}\n", f"mode {want:04o}\n"),
            )
            if not self.check:
                os.chmod(path, want)

    def ensure_file(
        self, path: str, mode: str, data: bytes | None, sha256: str | None = None,
        secret: bool = False,
    ) -> bool:  # fmt: skip
        """Make `path` a root:root file of `mode` holding `data` (or, when `data` is None, check
        it against `sha256`). Whether its content changed; a secret's content is never shown."""
        want = int(mode, 8)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.fail(f"{path} is a directory where a file belongs: remove it, then deploy again")
        before = None
        if st is not None and stat.S_ISREG(st.st_mode):
            if data is not None:
                with open(path, "rb") as fh:
                    before = fh.read()
                same = before == data
            else:
                same = self.module.sha256(path) == sha256
            if same:
                self.owner_mode(path, st, want)
                return False
        what = "created" if st is None else "content differs"
        shown = None
        if (
            not secret
            and data is not None
            and _is_text(data)
            and (before is None or _is_text(before))
        ):
            shown = _diff(path, (before or b"").decode(), data.decode())
        self.changed(f"{path}: {what}", shown or _diff(path, f"{what}\n", "written\n"))
        if not self.check:
            if data is None:
                self.fail(f"{path}: no content to write (the controller sent none)")
            write_atomically(path, data, want, owner=(0, 0))
        return True


def _diff(path: str, before: str, after: str) -> dict:
    return {"before_header": path, "after_header": path, "before": before, "after": after}


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return b"\0" not in data


def _owner(st: os.stat_result) -> str:
    try:
        return f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    except KeyError:
        return f"{st.st_uid}:{st.st_gid}"
