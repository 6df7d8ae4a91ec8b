"""`python -m saveos_offsite sync|fetch --config PATH`: one JSON object on stdout, exit 0/1/2."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import List, Optional

from saveos_offsite import __version__, replicate
from saveos_offsite import settings as settings_mod
from saveos_offsite.settings import OffsiteError

EXIT = {"ok": 0, "warning": 1, "error": 2}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"saveos-offsite: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="saveos-offsite", description=__doc__)
    parser.add_argument("--version", action="version", version=f"saveos-offsite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, text in (
        ("sync", "upload what changed in the repository, delete what vanished (after a delay)"),
        ("fetch", "download a host's offsite copy into an empty directory and verify it"),
        ("verify", "prove the copy is locked: versioning, Object Lock, every object locked"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--config", help=f"offsite config (default {settings_mod.DEFAULT_CONFIG})")
        cmd.add_argument("-v", "--verbose", action="count", default=0)
        cmd.add_argument("--host", help="whose copy (default: the config's host)")
        if name == "sync":
            cmd.add_argument(
                "--repository", help="the local repository to copy (default: the config's)"
            )
        if name == "fetch":
            cmd.add_argument("--dest", required=True, help="empty directory for the repository")
            cmd.add_argument(
                "--as-of", help="the copy as it stood at this ISO 8601 instant (object versions)"
            )
    return parser


def _instant(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise OffsiteError(f"--as-of {text!r} is not an ISO 8601 instant") from None
    if moment.tzinfo is None:
        raise OffsiteError(f"--as-of {text!r} needs a timezone (e.g. Z)")
    return moment


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # botocore's debug log prints request headers (signatures): keep it quiet at any -v
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        overrides = {"host": args.host, "repository": getattr(args, "repository", None)}
        settings = settings_mod.load(args.config, overrides)
        if args.command == "sync":
            result = replicate.sync(settings)
        elif args.command == "verify":
            result = replicate.verify(settings)
        else:
            result = replicate.fetch(settings, args.dest, as_of=_instant(args.as_of))
    except OffsiteError as exc:
        result = {"status": "error", "result": "error", "message": exc.message}
    except KeyboardInterrupt:
        result = {"status": "error", "result": "error", "message": "interrupted"}
    except Exception as exc:  # a bug: still one JSON line for the agent
        logging.getLogger("saveos_offsite").debug("internal error", exc_info=True)
        result = {"status": "error", "result": "error", "message": f"internal error: {exc}"}
    print(json.dumps(result, sort_keys=True))
    if result["status"] == "error":
        print(f"saveos-offsite: error: {result['message']}", file=sys.stderr)
    return EXIT.get(result["status"], 2)
