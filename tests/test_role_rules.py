"""The role checks a host's settings with the agent's and the API's own rules: its controller
module imports saveos_rules as module_utils (a link to agent/saveos_rules), so the three can
never disagree. Run here through ansible itself, as the role runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import saveos_rules
import yaml
from ansible_support import ansible, ansible_env, playbook

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "saveos_agent"


def _escrow_state(tmp_path: Path, settings: dict, schedules: dict | None = None) -> dict:
    args = {
        "artifact": str(tmp_path / "missing.pyz"),
        "source_dir": str(ROOT / "agent"),
        "escrow_dir": str(tmp_path / "escrow"),
        "hosts": {
            host: {
                "escrow_dir": str(tmp_path / "escrow" / host),
                **s,
                **(schedules or {}).get(host, {}),
            }
            for host, s in settings.items()
        },
    }
    env = ansible_env(
        {
            "ANSIBLE_LIBRARY": str(ROLE / "library"),
            "ANSIBLE_MODULE_UTILS": str(ROLE / "module_utils"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        }
    )
    proc = ansible(
        "ansible", "localhost", "-c", "local", "-i", "localhost,",
        "-m", "saveos_escrow_state", "-a", json.dumps(args), env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # "localhost | SUCCESS => {...}"
    return json.loads(proc.stdout.split("=>", 1)[1])["hosts"]


def test_role_module_applies_the_shared_rules(tmp_path):
    ok = {"backup_interval_s": 3600, "heartbeat_interval_s": 60, "retention": {}}
    hosts = _escrow_state(
        tmp_path,
        {
            "web1": ok,
            # INI inventories give strings: still numbers to the rules.
            "web2": {**ok, "backup_interval_s": "3600"},
            "fast": {**ok, "heartbeat_interval_s": saveos_rules.HEARTBEAT_INTERVAL_MIN_S - 1},
            "often": {**ok, "backup_interval_s": 30},
            "slow": {**ok, "heartbeat_interval_s": 3600},
            "keepless": {**ok, "retention": {"keep_daily": 0}},
            "typo": {**ok, "retention": {"keep_dayly": 3}},
            "-bad": ok,
        },
    )
    assert hosts["web1"]["problems"] == [] and hosts["web2"]["problems"] == []
    assert hosts["fast"]["problems"] == [
        "saveos_agent_heartbeat_interval_s must be between 5 and 31622400, got 4"
    ]
    assert "saveos_agent_backup_interval_s must be between 60" in hosts["often"]["problems"][0]
    assert "must be shorter than backup_interval_s" in hosts["slow"]["problems"][0]
    assert hosts["keepless"]["problems"] == [
        "saveos_agent_retention keeps nothing: set keep_within or a keep_* count above 0"
    ]
    assert hosts["typo"]["problems"] == ["saveos_agent_retention.keep_dayly is not a retention key"]
    assert "is not a valid host name" in hosts["-bad"]["problems"][0]
    # The store is filled for the hosts the rules accept only: a private passphrase each, marked
    # new until a host installs it; none for a host the deploy will refuse.
    escrow = tmp_path / "escrow"
    assert escrow.stat().st_mode & 0o777 == 0o700
    for host in ("web1", "web2"):
        assert hosts[host]["generated"] is True and hosts[host]["new"] is True
        passphrase = escrow / host / "passphrase"
        assert passphrase.stat().st_mode & 0o777 == 0o600
        assert len(passphrase.read_text().strip()) == 64
        assert (escrow / host / "passphrase.new").exists()
    assert (escrow / "web1" / "passphrase").read_text() != (
        escrow / "web2" / "passphrase"
    ).read_text()
    for host in ("fast", "often", "slow", "keepless", "typo", "-bad"):
        assert hosts[host]["generated"] is hosts[host]["new"] is False
        assert not (escrow / host).exists()
    # Again: the passphrases are kept, never replaced.
    before = (escrow / "web1" / "passphrase").read_text()
    again = _escrow_state(tmp_path, {"web1": ok})
    assert again["web1"]["generated"] is False and again["web1"]["new"] is True  # still unused
    assert (escrow / "web1" / "passphrase").read_text() == before
    (escrow / "web1" / "passphrase.new").unlink()  # as the host call does once it installed it
    assert _escrow_state(tmp_path, {"web1": ok})["web1"]["new"] is False


WEEK_MINUTES = 7 * 1440
THURSDAY = 3 * 1440  # the epoch's weekday, in minutes from Monday 00:00


def _calendar_minutes(lines: list[str]) -> set[int]:
    """The minutes of the week (Monday 00:00 is 0) that the role's OnCalendar values name."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    found = set()
    for line in lines:
        *day, date, clock, zone = line.split()
        assert (date, zone) == ("*-*-*", "UTC"), line
        hours, minutes, seconds = clock.split(":")
        assert seconds == "00", line
        first, _, step = minutes.partition("/")
        for d in [days.index(day[0])] if day else range(7):
            for h in range(24) if hours == "*" else map(int, hours.split(",")):
                for m in range(int(first), 60, int(step or 60)):
                    found.add(d * 1440 + h * 60 + m)
    return found


def _offset_minutes(interval_s: int, offset_s: int) -> set[int]:
    """The minutes of the week at which the supervised daemon's slots fall."""
    return {
        ((offset_s + k * interval_s) // 60 + THURSDAY) % WEEK_MINUTES
        for k in range(7 * 86400 // interval_s)
    }


def test_a_host_s_timers_and_its_daemon_share_its_slots(tmp_path):
    """saveos_rules.host_schedule: the timers' calendars and the daemon's offsets name the same
    instants for every interval a timer can hold, at the host's own minute of its window."""
    intervals = [300, 900, 1800, 3600, 5400, 7200, 21600, 43200, 86400, 604800]
    for name in ("web1", "db-7", "a.example.org"):
        for start, width in (("01:00", 180), ("23:30", 90), ("00:00", 1)):
            for interval in intervals:
                slots = saveos_rules.host_schedule(
                    name,
                    {
                        "backup_interval_s": interval, "check_interval_s": 604800,
                        "drill_interval_s": interval if interval >= 3600 else 3600,
                        "heartbeat_interval_s": 60, "backup_window_start": start,
                        "backup_window_minutes": width,
                    },
                )  # fmt: skip
                assert slots["calendars_ok"], (name, interval)
                for kind in ("backup", "check", "drill"):
                    every = {"backup": interval, "check": 604800}.get(kind, max(interval, 3600))
                    assert _calendar_minutes(slots[f"{kind}_calendar"]) == _offset_minutes(
                        every, slots[f"{kind}_offset_s"]
                    ), (name, start, interval, kind, slots)
                    assert 0 <= slots[f"{kind}_offset_s"] < every
                if interval >= 86400:  # a daily or weekly backup falls inside the window
                    (at,) = {m % 1440 for m in _calendar_minutes(slots["backup_calendar"])}
                    assert (at - int(start[:2]) * 60 - int(start[3:])) % 1440 < width
    # A timer cannot hold every 7 minutes (no whole number of slots a day), nor 25 hours; an
    # override can, and is taken as given.
    for interval in (420, 90000):
        slots = saveos_rules.host_schedule("web1", {"backup_interval_s": interval})
        assert not slots["calendars_ok"]
    fixed = saveos_rules.host_schedule(
        "web1", {"backup_interval_s": 90000, "backup_on_calendar": "Sun *-*-* 04:00:00",
                 "check_interval_s": 604800, "drill_interval_s": 604800}
    )  # fmt: skip
    assert fixed["calendars_ok"] and fixed["backup_calendar"] == ["Sun *-*-* 04:00:00"]
    # The controller's call works them out for each host, from an INI inventory's strings too.
    settings = {"backup_interval_s": 21600, "check_interval_s": 604800,
                "drill_interval_s": 86400, "heartbeat_interval_s": 60,
                "backup_window_start": "02:00", "backup_window_minutes": 120}  # fmt: skip
    ok = {"backup_interval_s": 21600, "heartbeat_interval_s": 60, "retention": {}}
    hosts = _escrow_state(
        tmp_path,
        {"web1": ok, "web2": ok},
        {"web1": settings, "web2": {key: str(value) for key, value in settings.items()}},
    )
    assert hosts["web1"]["schedule"] == saveos_rules.host_schedule("web1", settings)
    assert hosts["web2"]["schedule"] == saveos_rules.host_schedule("web2", settings)


def test_module_utils_is_the_shared_file():
    link = ROLE / "module_utils" / "saveos_rules.py"
    assert link.resolve() == Path(saveos_rules.__file__).resolve()


def test_the_fleet_row_has_one_spelling():
    """The API's response model documents exactly the row saveos_rules names (the API's rows
    and `saveos status --json` are held to its order in test_cli_status)."""
    from saveos_api.schemas import AgentStatusOut
    from saveos_cli.commands.status import AGENT_KEYS

    assert set(AgentStatusOut.model_fields) == set(saveos_rules.FLEET_ROW_KEYS)
    assert AGENT_KEYS is saveos_rules.FLEET_ROW_KEYS
    assert set(saveos_rules.ALARM_STATUSES) < set(saveos_rules.STATUSES)
    status_field = AgentStatusOut.model_fields["status"].annotation
    assert set(status_field.__args__) == set(saveos_rules.STATUSES)


def test_recovery_finds_host_paths_where_the_role_put_them(tmp_path):
    """saveos escrow verify / recover read the role's own variables (no copy in the CLI),
    rendered with each host's inventory vars."""
    from saveos_cli.inventory_hosts import load_hosts

    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[all]\nweb1\nweb2 saveos_agent_install_dir=/srv/saveos saveos_agent_repository=/data/r\n"
    )
    web1, web2 = load_hosts(inventory)
    assert web1.layout == {
        "repository": "/var/lib/saveos/repo",
        "agent_pyz": "/opt/saveos/saveos-agent.pyz",
        "offsite_python": "/opt/saveos/offsite-venv/bin/python",
        "offsite_config": "/etc/saveos/offsite.json",
    }
    assert web2.repository == "/data/r"
    assert web2.layout["agent_pyz"] == "/srv/saveos/saveos-agent.pyz"
    assert web2.layout["offsite_python"] == "/srv/saveos/offsite-venv/bin/python"


def test_a_repository_server_inventory_loads_in_a_fresh_process(tmp_path):
    """On a repository server, the role's variables go through a lookup plugin: the CLI's own
    process (no ansible command ran in it) loads such an inventory as Ansible does, without
    a warning (saveos recover and the central prune start so)."""
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[saveos_repo_servers]\nrepo1 ansible_host=127.0.0.9 ansible_port=2222\n"
        "[all]\nweb1\nweb2 saveos_agent_repository=/data/r\n"
    )
    code = (
        "import sys; from pathlib import Path; from saveos_cli.inventory_hosts import load_hosts;"
        "print(sorted((h.name, h.repository) for h in load_hosts(Path(sys.argv[1]))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, str(inventory)], capture_output=True, text=True, cwd=ROOT
    )
    assert found.returncode == 0, found.stderr
    assert found.stderr == ""
    assert "('web2', '/data/r')" in found.stdout and "'web1'" in found.stdout


def test_deploy_refuses_a_host_the_rules_reject_without_contacting_it(tmp_path):
    """The host call's action plugin fails on the escrow call's problems for the host on the
    controller: a host whose address answers nothing fails with the rule's message, never as
    unreachable, and its escrow store gets no passphrase; so does a host whose variables break the
    role's own rule."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "fast": {
                            # TEST-NET-1: nothing answers there, and nothing must be asked.
                            "ansible_host": "192.0.2.1",
                            "saveos_agent_heartbeat_interval_s": 4,
                        },
                        # The role's own rule (vars/main.yml), and a host named after a dict
                        # method: the batch's results are looked up by name, never as attributes.
                        "clear": {
                            "ansible_host": "192.0.2.2",
                            "saveos_agent_api_url": "http://192.0.2.3:8000",
                            "saveos_agent_backup_window_start": "late",
                        },
                    }
                }
            }
        )
    )
    env = ansible_env(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "SAVEOS_API_URL": "http://127.0.0.1:9",
            "SAVEOS_ESCROW_DIR": str(tmp_path / "escrow"),
        }
    )
    proc = playbook(inventory, ROOT / "playbooks" / "deploy.yml", env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "fast: saveos_agent_heartbeat_interval_s must be between 5" in proc.stdout
    assert "clear: inconsistent saveos_agent_* variables" in proc.stdout, proc.stdout
    assert "http:// only to loopback" in proc.stdout
    assert "unreachable=0" in proc.stdout and "UNREACHABLE" not in proc.stdout, proc.stdout
    assert proc.stdout.count("failed=1") == 2, proc.stdout
    assert not (tmp_path / "escrow" / "fast").exists()
    assert not (tmp_path / "escrow" / "clear").exists()


def _itself(name: str, value: object) -> bool:
    """A fact set to its own variable's value (tasks/resolve.yml): resolved once, not a result."""
    return isinstance(value, str) and value.replace(" ", "") == "{{" + name + "}}"


def _set_facts(tasks: list | None) -> list[tuple[str, object]]:
    """(name, value) of every fact a task list sets, blocks included."""
    facts: list[tuple[str, object]] = []
    for task in tasks or []:
        for key, args in task.items():
            if key.split(".")[-1] == "set_fact" and isinstance(args, dict):
                facts.extend((k, v) for k, v in args.items() if k != "cacheable")
            elif key in ("block", "rescue", "always"):
                facts.extend(_set_facts(args))
    return facts


def _role_results(tasks: list | None) -> list[str]:
    """The names a task list registers or sets as facts (other than to their own values)."""
    names = [task["register"] for task in _all_tasks(tasks) if "register" in task]
    return names + [k for k, v in _set_facts(tasks) if not _itself(k, v)]


def _all_tasks(tasks: list | None) -> list[dict]:
    out: list[dict] = []
    for task in tasks or []:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out.extend(_all_tasks(task.get(key)))
    return out


def test_role_results_are_named_apart_from_the_inputs():
    """A role's registered results and facts are `_<role>_*` (docs/GLOSSARY.md): never an input
    name, which an -e would silently override, nor one that reads like an input."""
    roles = sorted(p for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
    inputs: set[str] = set()
    for role in roles:
        specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        for entry in specs["argument_specs"].values():
            inputs |= set(entry.get("options") or {})
        for part in ("defaults", "vars"):
            if (role / part / "main.yml").is_file():
                inputs |= set(yaml.safe_load((role / part / "main.yml").read_text()) or {})
    results = {
        (role.name, path.name, name)
        for role in roles
        for path in sorted((role / "tasks").glob("*.yml")) + sorted(role.glob("handlers/*.yml"))
        for name in _role_results(yaml.safe_load(path.read_text()))
    }
    assert len(results) > 20  # both roles that register anything were read
    assert [r for r in results if not r[2].startswith(f"_{r[0]}_")] == []
    assert [r for r in results if r[2].lstrip("_") in inputs] == []


def test_the_resolved_variables_are_the_role_s_own_values():
    """What resolve.yml sets to its own value is one of the role's variables (a default or a
    role var), never a name of its own: -e and the inventory still decide what it is."""
    role_vars: set[str] = set()
    for part in ("defaults", "vars"):
        role_vars |= set(yaml.safe_load((ROLE / part / "main.yml").read_text()) or {})
    resolved = [
        name
        for path in sorted((ROLE / "tasks").glob("*.yml"))
        for name, value in _set_facts(yaml.safe_load(path.read_text()))
        if _itself(name, value)
    ]
    assert len(resolved) >= 10, resolved  # resolve.yml was read
    assert [name for name in resolved if name not in role_vars] == []
    assert "saveos_agent_repository_url" in resolved and "saveos_agent_api_url" in resolved
