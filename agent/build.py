#!/usr/bin/env python3
"""Build the saveos-agent zipapp: `python3 agent/build.py --out dist/saveos-agent.pyz`.

Deterministic (sorted entries, fixed mtimes) so a re-deploy sees no change. Every module is
stored as source and as unchecked hash-based bytecode of the building Python: zipimport never
writes bytecode, so without it each agent start compiles every module (about a third of the
start-up CPU). An interpreter with another bytecode magic number ignores the .pyc entries and
compiles the .py sources as before.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import marshal
import os
import sys
import zipfile

from saveos_rules import write_atomically  # beside this file: the script's own directory

HERE = os.path.dirname(os.path.abspath(__file__))
# saveos_offsite rides along: the offsite virtualenv runs it with the zipapp on PYTHONPATH;
# saveos_rules are the rules the agent shares with the API, the CLI and the role
PACKAGES = [os.path.join(HERE, name) for name in ("saveos_agent", "saveos_offsite", "saveos_rules")]
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
MAIN = "import sys\nfrom saveos_agent.cli import main\nsys.exit(main())\n"


def _entries():
    for package in PACKAGES:
        for root, dirs, files in os.walk(package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    full = os.path.join(root, name)
                    yield os.path.relpath(full, HERE).replace(os.sep, "/"), full


def _bytecode(arcname: str, source: bytes) -> bytes:
    """An unchecked hash-based .pyc (PEP 552): no mtime in it, never re-validated on import."""
    code = compile(source, arcname, "exec", dont_inherit=True)
    flags = (0b01).to_bytes(4, "little")  # hash-based, check_source off
    header = importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def build(out: str) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:

        def add(arcname: str, data: bytes) -> None:
            info = zipfile.ZipInfo(arcname, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)

        add("__main__.py", MAIN.encode())
        for arcname, full in _entries():
            with open(full, "rb") as fh:
                source = fh.read()
            add(arcname, source)
            add(arcname + "c", _bytecode(arcname, source))
    payload = b"#!/usr/bin/env python3\n" + buffer.getvalue()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        with open(out, "rb") as fh:
            if fh.read() == payload:
                # Unchanged: keep the bytes, but mark it as built now, or a source whose mtime
                # moved (a checkout, a merge) would leave it "older than its sources" forever.
                os.utime(out)
                return out
    except OSError:
        pass
    write_atomically(out, payload, 0o755)  # an executable everyone may run
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="build the saveos-agent zipapp")
    parser.add_argument("--out", default=os.path.join("dist", "saveos-agent.pyz"))
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
