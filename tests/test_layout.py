"""The lab is apart from the product: no product module imports saveos_lab, and `saveos lab`
still runs, found as an add-on command group (the `saveos.commands` entry point)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import cli_support
from conftest import REPO_ROOT

PRODUCT = ("saveos_cli", "saveos_api", "agent/saveos_agent", "agent/saveos_offsite")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_product_module_imports_the_lab():
    sources = [p for d in PRODUCT for p in sorted((Path(REPO_ROOT) / d).rglob("*.py"))]
    assert len(sources) > 50, sources  # the walk found the product, not an empty tree
    offenders = {
        str(p.relative_to(REPO_ROOT)): sorted(
            n for n in _imports(p) if n.split(".")[0] == "saveos_lab"
        )
        for p in sources
    }
    assert {p: n for p, n in offenders.items() if n} == {}
    assert not list((Path(REPO_ROOT) / "saveos_cli").rglob("lab*.py"))


def test_saveos_lab_is_an_add_on_command(tmp_path):
    def saveos(*args: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}
        return cli_support.saveos(*args, env=env, timeout=60)

    listed = saveos("--help")
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[1:2] == ["lab"] for line in listed.stdout.splitlines()), listed.stdout
    # A lab command runs (and loads saveos_lab.lab only then): an empty lab dir, no hosts.
    empty = saveos("lab", "status", "--dir", str(tmp_path / "no-lab"))
    assert empty.returncode == 0 and "no lab in" in empty.stdout, empty.stdout + empty.stderr
    bad = saveos("lab", "up", "--hosts", "0", "--dir", str(tmp_path / "no-lab"))
    assert bad.returncode == 1 and "--hosts must be between 1 and 200" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
