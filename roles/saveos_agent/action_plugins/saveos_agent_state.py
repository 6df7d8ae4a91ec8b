"""The controller's half of saveos_agent_state: the escrow store stays on the controller.

It reads the host's escrowed passphrase (never templated into the task's arguments), sends the
agent zipapp only when asked to (the second call, to a host whose copy differed), writes the
repository key the host exported into the escrow store and drops it from the result, and takes
back a passphrase the escrow store generated for a host that refused it.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os

from ansible.plugins.action import ActionBase


def _shared_rules():
    """The role's module_utils/saveos_rules.py (the collection's plugins/module_utils/, the same
    step up from here). A controller-side plugin cannot `import ansible.module_utils.saveos_*`:
    Ansible resolves those for modules only, while it packs them for the host."""
    path = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "module_utils")
    spec = importlib.util.spec_from_file_location(
        "_saveos_role_rules", os.path.join(path, "saveos_rules.py")
    )
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    return rules


write_atomically = _shared_rules().write_atomically

# The escrow store's marker of a passphrase that no host has used yet (saveos_escrow_state).
NEW_MARKER = "passphrase.new"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        escrow = args.pop("escrow_dir")
        problems = args.pop("setting_problems", None) or []
        if problems:
            host = task_vars["inventory_hostname"]
            result.update(failed=True, changed=False, msg=f"{host}: {'; '.join(problems)}")
            return result
        zipapp_src = args.pop("zipapp_src")
        # The role renders every templated file with one lookup (files, supervisor_files,
        # systemd_files, config): the module's options they become.
        args.update(args.pop("host_files", None) or {})
        if args.pop("send_zipapp", False):
            with open(zipapp_src, "rb") as fh:
                args["zipapp_b64"] = base64.b64encode(fh.read()).decode("ascii")
        passphrase = _read(os.path.join(escrow, "passphrase"))
        marker = os.path.join(escrow, NEW_MARKER)
        if passphrase is not None:
            args["passphrase"] = passphrase
            args["passphrase_new"] = os.path.exists(marker)
        key_path = os.path.join(escrow, "key.export")
        args["key_escrowed"] = os.path.isfile(key_path)
        args.setdefault("host", task_vars["inventory_hostname"])

        # A call that may export the repository key returns it: Ansible logs a module's raw
        # output at -vvv unless the play context says no_log, so that call (once in a host's
        # life) is censored there. What this plugin returns, without the key, is shown as usual.
        # (The connection logs by its own copy of the play context.)
        context = self._connection._play_context
        censor = not args["key_escrowed"] and not context.no_log
        if censor:
            context.no_log = True
        try:
            answer = self._execute_module(module_args=args, task_vars=task_vars)
        finally:
            if censor:
                context.no_log = False
        self._remove_tmp_path(self._connection._shell.tmpdir)

        key = answer.pop("key_export", None)
        if key and not os.path.exists(key_path):
            write_atomically(key_path, key.encode("utf-8"))
        if answer.get("refused_passphrase") and os.path.exists(marker):
            # Generated in this run for a host that has its own: never leave it to be used later.
            for name in ("passphrase", NEW_MARKER):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(escrow, name))
        elif answer.pop("passphrase_in_use", False) and os.path.exists(marker):
            os.unlink(marker)
        result.update(answer)
        return result
