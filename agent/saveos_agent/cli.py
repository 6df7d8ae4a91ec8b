"""saveos-agent command line: --json everywhere, exit 0 ok / 1 warning / 2 error."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, Dict, List, Optional

from saveos_agent import __version__, daemon, execute, logsetup
from saveos_agent import config as config_mod
from saveos_agent.actions import (
    EXIT,
    archives,
    backup,
    check,
    drill,
    heartbeat,
    jobs,
    offsite,
    repository,
    restore,
    status,
)
from saveos_agent.errors import AgentBusy, AgentError

log = logging.getLogger("saveos_agent.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"saveos-agent: error: {message} (see --help)\n")


def _common() -> argparse.ArgumentParser:
    # SUPPRESS lets the options appear before or after the command without clobbering
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="config file path")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON out")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="saveos-agent", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"saveos-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    add(
        "heartbeat",
        "send one heartbeat (with what runs now); the jobs it hands out go to the jobs service"
        " on systemd hosts, else run before it returns",
    )
    add("run-jobs", "run the jobs queued by heartbeats, in order (saveos-agent-jobs.service)")
    wait_help = (
        "seconds to wait for a backup/check already running on this host before giving up"
        " as busy (exit 75); default: busy_wait_s from the config"
    )
    backup = add("backup", "borg create, prune, compact, then report the snapshot")
    backup.add_argument("--wait", type=int, metavar="SECONDS", help=wait_help)
    add("list", "archives in the repository")
    info = add("info", "repository (or one archive's) information")
    info.add_argument("archive", nargs="?")
    check = add("check", "borg check of repository and archives, reported")
    check.add_argument("--verify-data", action="store_true")
    check.add_argument("--wait", type=int, metavar="SECONDS", help=wait_help)
    check.add_argument(
        "--scheduled",
        action="store_true",
        help="the scheduled check: --verify-data when the last one is older than"
        " verify.verify_data_interval_s",
    )
    restore = add("restore", "extract an archive into a target directory, or load a database")
    restore.add_argument("archive", help="archive name ('latest' with --database)")
    restore.add_argument("paths", nargs="*", metavar="PATH")
    restore.add_argument("--target", metavar="DIR")
    restore.add_argument("--in-place", action="store_true", help="overwrite the source paths")
    restore.add_argument(
        "--database", metavar="NAME", help="load this database's dump (TYPE/NAME; all: every one)"
    )
    restore.add_argument("--into", metavar="NAME", help="into this database (default: its own)")
    restore.add_argument(
        "--force", action="store_true", help="drop and replace a non-empty target database"
    )
    drill = add("drill", "restore a sample of the latest archive and compare with the source")
    size = drill.add_mutually_exclusive_group()
    size.add_argument("--count", type=int, metavar="N")
    size.add_argument("--percent", type=float, metavar="P")
    size.add_argument(
        "--scheduled", action="store_true", help="the scheduled drill: verify.drill_count files"
    )
    daemon = add("daemon", "heartbeats, scheduled backups and queued jobs until SIGTERM")
    daemon.add_argument("--pidfile")
    spool = add("spool", "the report spool")
    spool_sub = spool.add_subparsers(dest="spool_command", metavar="ACTION", parser_class=_Parser)
    spool_sub.required = True
    spool_sub.add_parser("flush", help="send spooled reports now", parents=[common])
    add("status", "config summary, spool depth, last backup, borg version")
    init = add("init", "create the repository (no-op when it exists)")
    init.add_argument("--encryption", default="repokey-blake2")
    offsite = add("offsite", "the offsite copy of the repository (S3)")
    offsite_sub = offsite.add_subparsers(
        dest="offsite_command", metavar="ACTION", parser_class=_Parser
    )
    offsite_sub.required = True
    offsite_sub.add_parser("sync", help="upload what changed, report the result", parents=[common])
    key = add("key-export", "export the repository key to a 0600 file")
    key.add_argument("--out", required=True)
    return parser


def _text(result: Dict[str, Any], command: str) -> str:
    if command == "list":
        lines = [f"{a['name']}  {a['start']}" for a in result["archives"]]
        return "\n".join(lines) or "(no archives)"
    if command == "status":
        keys = ("agent_version", "borg_version", "spool_depth", "last_backup_at", "last_archive")
        lines = [f"{k}: {result.get(k)}" for k in keys]
        lines.append(f"repository: {result['config']['repository']}")
        return "\n".join(lines)
    if command == "info":
        return json.dumps(result["info"], indent=2)
    parts = [result.get("status", "ok")]
    for key in ("archive", "result", "message", "target", "into"):
        if result.get(key):
            parts.append(f"{key}={result[key]}")
    if command == "drill":
        parts.append(f"checked={result['files_checked']} mismatched={result['files_mismatched']}")
    if command == "offsite":
        for key in ("objects_uploaded", "bytes_uploaded"):
            parts.append(f"{key}={result.get(key, 0)}")
    if command == "spool":
        parts.append(f"sent={result['sent']} remaining={result['remaining']}")
    return " ".join(str(p) for p in parts)


def _dispatch(args: argparse.Namespace) -> Dict[str, Any]:
    cfg = config_mod.load(getattr(args, "config", None))
    logsetup.setup(getattr(args, "verbose", 0) or 0, cfg.log_file)
    command = args.command
    if getattr(args, "wait", None) is not None and args.wait < 0:
        raise AgentError("--wait must be 0 or more seconds")
    if command == "backup":
        return backup.backup(cfg, wait_s=args.wait)
    if command == "list":
        return archives.list_archives(cfg)
    if command == "info":
        return archives.info(cfg, args.archive)
    if command == "check":
        if args.scheduled:
            from saveos_agent import verify_schedule

            if args.verify_data:
                raise AgentError("--scheduled chooses --verify-data itself; give one of them")
            return verify_schedule.scheduled_check(cfg, wait_s=args.wait)
        return check.check(cfg, verify_data=args.verify_data, wait_s=args.wait)
    if command == "restore" and args.database:
        if args.paths or args.target or args.in_place:
            raise AgentError("--database restores a database: no PATH, --target or --in-place")
        return restore.restore_database(cfg, args.archive, args.database, args.into, args.force)
    if command == "restore" and (args.into or args.force):
        raise AgentError("--into and --force go with --database")
    if command == "restore":
        return restore.restore(cfg, args.archive, args.paths, args.target, args.in_place)
    if command == "drill":
        if args.count is not None and args.count < 1:
            raise AgentError("--count must be at least 1")
        if args.percent is not None and not 0 < args.percent <= 100:
            raise AgentError("--percent must be in (0, 100]")
        if args.scheduled:
            from saveos_agent import verify_schedule

            return verify_schedule.scheduled_drill(cfg)
        return drill.drill(cfg, count=args.count, percent=args.percent)
    if command == "heartbeat":
        return heartbeat.heartbeat(cfg)
    if command == "run-jobs":
        return jobs.run_jobs(cfg, stay_interactive=True)
    if command == "spool":
        return status.flush(cfg)
    if command == "status":
        return status.status(cfg)
    if command == "offsite":
        return offsite.sync(cfg)
    if command == "init":
        return repository.init(cfg, args.encryption)
    if command == "key-export":
        return repository.key_export(cfg, args.out)
    if command == "daemon":
        return {"status": "ok", "rc": daemon.run(cfg, pidfile=args.pidfile)}
    raise AgentError(f"unknown command {command}")


def _on_sigterm(signum, _frame):
    # let borg roll back and release its lock, then report the interruption
    execute.interrupt_running()


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    as_json = bool(getattr(args, "json", False))
    logsetup.setup(getattr(args, "verbose", 0) or 0)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = _dispatch(args)
    except AgentError as exc:
        message = logsetup.mask(exc.message)
        busy = isinstance(exc, AgentBusy)
        if as_json:
            out: Dict[str, Any] = {"status": "error", "message": message}
            if busy:
                out.update(result="busy", holder=exc.holder)
            print(json.dumps(out, sort_keys=True))
        print(f"saveos-agent: {'busy' if busy else 'error'}: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("saveos-agent: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line for people, the traceback in the log
        log.debug("internal error", exc_info=True)
        message = logsetup.mask(f"{type(exc).__name__}: {exc}")
        if as_json:
            print(json.dumps({"status": "error", "message": message}))
        print(f"saveos-agent: internal error: {message}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(_text(result, args.command))
    return EXIT.get(str(result.get("status", "ok")), 2)
