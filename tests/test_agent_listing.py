"""The agent's `list` job (archive browser for the dashboard) against real borg."""

from __future__ import annotations

import pytest
from agent_support import AgentHost, make_tree
from saveos_agent import config
from saveos_agent.actions import listing
from saveos_agent.errors import AgentError


def test_children_sizes_folders_and_orders_them():
    items = [
        {"type": "d", "size": 0, "mtime": "m0", "path": "srv"},
        {"type": "d", "size": 0, "mtime": "m1", "path": "srv/a"},
        {"type": "-", "size": 5, "mtime": "m2", "path": "srv/a/x"},
        {"type": "-", "size": 7, "mtime": "m3", "path": "srv/a/deep/y"},
        {"type": "-", "size": 3, "mtime": "m4", "path": "srv/b.txt"},
        {"type": "l", "size": 0, "mtime": "m5", "path": "srv/c"},
        {"type": "-", "size": 9, "mtime": "m6", "path": "srvx/other"},
    ]
    assert listing.children(items, "srv") == [
        {"name": "a", "type": "d", "size": 12, "mtime": "m1"},
        {"name": "b.txt", "type": "-", "size": 3, "mtime": "m4"},
        {"name": "c", "type": "l", "size": 0, "mtime": "m5"},
    ]
    assert [e["name"] for e in listing.children(items, "")] == ["srv", "srvx"]


@pytest.mark.parametrize("bad", ["../etc", "a/../../b", "x\x00y", "a" * 5000])
def test_paths_that_climb_out_or_are_malformed_are_refused(bad):
    with pytest.raises(AgentError):
        listing.clean_path(bad)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory, agent_pyz):
    h = AgentHost(tmp_path_factory.mktemp("listing"), agent_pyz)
    make_tree(h.src)
    (h.src / "data" / "tab\tand\nnewline").write_text("odd name\n")
    h.init()
    rc, out = h.json("backup")
    assert rc == 0, out
    return h, out["archive"]


@pytest.mark.borg
def test_list_folder_pages_direct_children_with_sizes_and_mtimes(backed_up, monkeypatch):
    h, archive = backed_up
    monkeypatch.setenv("BORG_BASE_DIR", h.env["BORG_BASE_DIR"])
    cfg = config.load(str(h.config_path))
    folder = str(h.src / "data").lstrip("/")
    first = listing.list_folder(cfg, archive, "/" + folder + "/", 0, 10)
    assert first["path"] == folder and first["offset"] == 0
    names = sorted(p.name for p in (h.src / "data").iterdir() if not p.name.endswith(".tmp"))
    assert first["total"] == len(names)
    rest = listing.list_folder(cfg, archive, folder, 10, 200)
    listed = [e["name"] for e in first["entries"] + rest["entries"]]
    assert sorted(listed) == names and len(first["entries"]) == 10
    by_name = {e["name"]: e for e in first["entries"] + rest["entries"]}
    assert by_name["blob.bin"]["size"] == 300_000 and by_name["blob.bin"]["type"] == "-"
    assert by_name["link"]["type"] == "l"
    assert by_name["grüße.txt"]["mtime"].startswith("20")
    assert "tab\tand\nnewline" in by_name
    # The root: one folder per top-level directory, sized by every file below it.
    root = listing.list_folder(cfg, archive)
    (top,) = root["entries"]
    assert top["type"] == "d" and top["size"] >= 300_000


@pytest.mark.borg
def test_list_folder_names_what_is_missing(backed_up, monkeypatch):
    h, archive = backed_up
    monkeypatch.setenv("BORG_BASE_DIR", h.env["BORG_BASE_DIR"])
    cfg = config.load(str(h.config_path))
    folder = str(h.src).lstrip("/")
    with pytest.raises(AgentError, match="is not in archive"):
        listing.list_folder(cfg, archive, folder + "/no-such-dir")
    with pytest.raises(AgentError, match="is a file"):
        listing.list_folder(cfg, archive, folder + "/data/blob.bin")
    with pytest.raises(AgentError, match="does not exist"):
        listing.list_folder(cfg, "no-such-archive", folder)
    with pytest.raises(AgentError, match="limit"):
        listing.list_folder(cfg, archive, folder, 0, 1000)


@pytest.mark.borg
def test_borg_create_progress_reaches_the_callback(tmp_path, monkeypatch, agent_pyz):
    """Real borg with the agent's argv: --progress under --log-json gives archive_progress lines."""
    from saveos_agent import borg_commands as bc
    from saveos_agent import execute

    h = AgentHost(tmp_path / "host", agent_pyz)
    make_tree(h.src)
    h.init()
    monkeypatch.setenv("BORG_BASE_DIR", h.env["BORG_BASE_DIR"])
    cfg = config.load(str(h.config_path))
    seen: list[dict] = []
    result = execute.run(
        bc.create(cfg.repository, "progress-test", cfg.sources, progress=True),
        execute.secrets_of(cfg),
        on_progress=seen.append,
    )
    assert result.status == "ok", result.error_message
    assert seen and all(e["type"] == "archive_progress" for e in seen)
    assert {"nfiles", "original_size", "deduplicated_size"} <= seen[0].keys()


def test_a_list_job_opens_the_interactive_window(tmp_path):
    """After a list job the daemon heartbeats every few seconds for a while (the next folder
    of the archive browser waits seconds, not a heartbeat interval); a backup does not."""
    from saveos_agent.actions import jobs
    from saveos_agent.config import Config

    jobs._interactive_until[0] = 0.0
    cfg = Config(path="x", repository=str(tmp_path / "none"), sources=[str(tmp_path)])
    cfg.spool_dir, cfg.state_dir = str(tmp_path / "spool"), str(tmp_path / "state")
    assert not jobs.interactive()
    out = jobs.run_job(cfg, {"id": 1, "kind": "list", "params": {"archive": "nope"}})
    assert out["state"] == "failed"  # no repository here: it fails, and still opens the window
    assert jobs.interactive()
    jobs._interactive_until[0] = 0.0
