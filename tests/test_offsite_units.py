"""Fast checks of the offsite config (agent side and program side), its timer and upload order."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from agent_support import write_private
from cli_support import environ_without, saveos
from saveos_agent import config as config_mod
from saveos_agent import daemon
from saveos_agent.actions.heartbeat import heartbeat_body
from saveos_agent.clock import iso, utcnow
from saveos_agent.errors import AgentError
from saveos_agent.state import save_state
from saveos_offsite import replicate
from saveos_offsite import settings as offsite_settings
from saveos_offsite.settings import OffsiteError


def _agent_config(tmp_path, offsite) -> config_mod.Config:
    passphrase = write_private(tmp_path / "passphrase", "pp\n")
    data = {
        "repository": str(tmp_path / "repo"),
        "sources": [str(tmp_path)],
        "passphrase_file": str(passphrase),
        "state_dir": str(tmp_path / "state"),
        "offsite": offsite,
    }
    return config_mod.validate(data, str(tmp_path / "agent.json"))


def test_agent_offsite_section(tmp_path):
    offsite_json = write_private(tmp_path / "offsite.json", "{}")
    cfg = _agent_config(tmp_path, {"config": str(offsite_json), "after_backup": True})
    assert cfg.offsite.python == config_mod.OFFSITE_PYTHON and cfg.offsite.after_backup
    assert heartbeat_body(cfg)["offsite_interval_s"] == 86400
    for bad, message in (
        ({}, "offsite.config"),
        ({"config": "rel/offsite.json"}, "absolute"),
        ({"config": str(offsite_json), "interval_s": 0}, "offsite.interval_s"),
        ({"config": str(offsite_json), "after_backup": "yes"}, "offsite.after_backup"),
        ({"config": str(offsite_json), "bucket": "x"}, "offsite.bucket"),
    ):
        with pytest.raises(AgentError, match=message):
            _agent_config(tmp_path, bad)
    offsite_json.chmod(0o644)
    with pytest.raises(AgentError, match="chmod 600"):
        _agent_config(tmp_path, {"config": str(offsite_json)})


def test_missing_virtualenv_is_one_clear_error(tmp_path):
    from saveos_agent.actions import offsite

    offsite_json = write_private(tmp_path / "offsite.json", "{}")
    cfg = _agent_config(tmp_path, {"config": str(offsite_json), "python": "/nonexistent/python"})
    with pytest.raises(AgentError, match="offsite virtualenv"):
        offsite.sync(cfg)


def test_offsite_timer_due_and_retry(tmp_path):
    offsite_json = write_private(tmp_path / "offsite.json", "{}")
    cfg = _agent_config(tmp_path, {"config": str(offsite_json), "interval_s": 3600})
    now = time.time()
    assert daemon.offsite_due(cfg, now)  # never synced
    save_state(cfg, last_offsite_at=iso(utcnow()))
    assert not daemon.offsite_due(cfg, now + 60)
    assert daemon.offsite_due(cfg, now + 3601)
    # a failed attempt after the last success retries after 600 s, not in a tight loop
    later = utcnow().timestamp() + 4000
    attempt = dt.datetime.fromtimestamp(later, dt.UTC)
    save_state(cfg, last_offsite_attempt_at=iso(attempt))
    assert not daemon.offsite_due(cfg, later + 60)
    assert daemon.offsite_due(cfg, later + 601)
    assert not daemon.offsite_due(_agent_config(tmp_path, None), now)


def _settings(tmp_path, **extra):
    data = {"bucket": "saveos-test", "repository": "/var/lib/saveos/repo", "host": "web1"}
    data.update(extra)
    path = write_private(tmp_path / "offsite.json", json.dumps(data))
    return offsite_settings.load(str(path))


def test_offsite_program_settings(tmp_path):
    s = _settings(tmp_path, prefix="fleet/")
    assert s.target == "s3://saveos-test/fleet/web1/"
    assert _settings(tmp_path, prefix="").key_prefix == "web1/"
    for bad, message in (
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"repository": "relative"}, "repository"),
        ({"delete_delay_s": -1}, "delete_delay_s"),
        ({"multipart_chunksize": 1024}, "multipart_chunksize"),
        ({"endpoint_url": "ftp://x"}, "endpoint_url"),
        ({"surprise": 1}, "surprise"),
    ):
        with pytest.raises(OffsiteError, match=message):
            _settings(tmp_path, **bad)


def test_credentials_file_private_and_well_formed(tmp_path):
    creds = write_private(
        tmp_path / "creds", "[default]\naws_access_key_id = AK\naws_secret_access_key = s3cr3t!\n"
    )
    s = _settings(tmp_path, credentials_file=str(creds))
    assert offsite_settings.read_credentials(s) == {
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "s3cr3t!",
    }
    write_private(creds, "aws_secret_access_key = s3cr3t!\n")  # no section header
    with pytest.raises(OffsiteError) as err:
        offsite_settings.read_credentials(s)
    assert "s3cr3t" not in err.value.message
    creds.chmod(0o640)
    with pytest.raises(OffsiteError, match="chmod 600"):
        _settings(tmp_path, credentials_file=str(creds))
    assert offsite_settings.read_credentials(_settings(tmp_path)) is None  # instance role


def test_upload_order_segments_first_config_last():
    names = ["config", "index.12", "data/1/600", "data/0/9", "hints.12", "README", "data/0/10"]
    ordered = sorted(names, key=replicate.upload_order)
    assert ordered[:3] == ["data/0/9", "data/0/10", "data/1/600"]
    assert set(ordered[3:5]) == {"hints.12", "index.12"}
    assert ordered[-2:] == ["README", "config"]


def _cli(tmp_path, *args: str):
    env = environ_without(
        SAVEOS_ESCROW_DIR=str(tmp_path / "escrow"),
        SAVEOS_DATA_DIR=str(tmp_path / "d"),
        COLUMNS="200",
    )
    return saveos(*args, env=env)


def test_recover_and_escrow_bad_input_is_one_clear_line(tmp_path):
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    web1: {ansible_host: 127.0.0.1}\n")
    cases = [
        (["--from", "web1", "--onto", "web1", "--target", "rel/dir"], "must be an absolute path"),
        (["--from", "nope", "--onto", "web1", "--target", "/srv/r"], "'nope' is not in"),
        (["--from", "web1", "--onto", "web1", "--target", "/srv/r"], "no escrowed passphrase"),
    ]
    for args, message in cases:
        proc = _cli(tmp_path, "recover", "-i", str(inventory), *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # with an escrow: where to recover from, and when
    for leaf in ("passphrase", "key.export"):
        write_private(tmp_path / "escrow" / "web1" / leaf, "x\n")
    base = ["--from", "web1", "--onto", "web1", "--target", "/srv/r"]
    cases = [
        (["--at", "yesterday"], 1, "--at 'yesterday' is not an ISO 8601 timestamp"),
        (["--method", "server"], 1, "web1's repository is not on a repository server"),
        (["--method", "server", "--at", "2026-01-01T00:00:00Z"], 1, "not on a repository server"),
        ([], 2, "web1: no offsite copy configured"),
        (["--at", "2026-01-01T00:00:00Z"], 2, "web1: no offsite copy configured"),
    ]
    for args, code, message in cases:
        proc = _cli(tmp_path, "recover", "-i", str(inventory), *base, *args)
        assert proc.returncode == code, proc.stdout + proc.stderr
        said = " ".join(proc.stderr.split())
        assert message in said and "Traceback" not in said, proc.stderr
    (tmp_path / "escrow" / "web1" / "passphrase").unlink()
    proc = _cli(tmp_path, "escrow", "verify", "-i", str(inventory), "--no-report", "--json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (res,) = json.loads(proc.stdout)["results"]
    assert res["result"] == "fail" and "no escrowed passphrase" in res["message"]
    proc = _cli(tmp_path, "escrow", "verify", "-i", str(inventory), "--method", "magic")
    assert proc.returncode == 1 and "'magic' is not one of 'auto', 'live', 'offsite'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_repository_servers_config_names_host_and_repository_per_run(tmp_path, capsys):
    """One offsite.json on a repository server for all its hosts: `sync --host H --repository
    PATH` picks one; the names are validated as in a file, and sync without any is one error."""
    from saveos_offsite import cli

    path = write_private(tmp_path / "offsite.json", json.dumps({"bucket": "saveos-test"}))
    s = offsite_settings.load(str(path), {"host": "web7", "repository": "/srv/repos/web7"})
    assert (s.host, s.repository, s.target) == (
        "web7",
        "/srv/repos/web7",
        "s3://saveos-test/saveos/web7/",
    )
    with pytest.raises(OffsiteError, match="host"):
        offsite_settings.load(str(path), {"host": "../web7"})
    with pytest.raises(OffsiteError, match="absolute"):
        offsite_settings.load(str(path), {"repository": "srv/web7"})
    assert cli.main(["sync", "--config", str(path), "--host", "web7"]) == 2
    assert "no repository to copy" in json.loads(capsys.readouterr().out)["message"]
