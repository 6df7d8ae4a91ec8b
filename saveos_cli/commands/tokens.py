"""`saveos tokens create|list|revoke` (operators' scoped tokens) and `saveos audit`."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from saveos_cli.commands._common import api, console
from saveos_cli.errors import SaveOSError

app = typer.Typer(
    help="Operators' API tokens: read (status, snapshots, metrics), operate (jobs, backups,"
    " restores), admin (provisioning, revocation, tokens).",
    no_args_is_help=True,
)
_DURATION = re.compile(r"^([1-9][0-9]*)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TOKEN_KEYS = (
    "id",
    "name",
    "scope",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
)


class Scope(StrEnum):
    read = "read"
    operate = "operate"
    admin = "admin"


def parse_duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise SaveOSError(f"--expires {text!r}: give a duration like 90d, 12h or 2w.")
    return int(match.group(1)) * _UNIT[match.group(2)]


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. prometheus or alice.")],
    scope: Annotated[Scope, typer.Option("--scope", "-s", help="read, operate or admin.")],
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Lifetime, e.g. 90d (default: none)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the token to this new 0600 file instead of stdout.",
        ),
    ] = None,
) -> None:
    """Create a token; it is shown once (the server keeps only its HMAC)."""
    seconds = parse_duration(expires) if expires else None
    with api() as client:
        made = client.create_token(name, scope.value, seconds)
    if output is not None:
        import os

        try:  # created 0600 and new: never a window where others could read it
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise SaveOSError(f"cannot create {output}: {exc.strerror}.") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(made["token"] + "\n")
        typer.echo(f"token {made['id']} ({made['scope']}) written to {output}", err=True)
    else:
        typer.echo(made["token"])
        typer.echo(f"token {made['id']} ({made['scope']}); shown once", err=True)


@app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every token: scope, expiry, last use, revocation (never the token itself)."""
    with api() as client:
        tokens = client.tokens()
    if as_json:
        typer.echo(json.dumps({"tokens": [{k: t.get(k) for k in TOKEN_KEYS} for t in tokens]}))
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(tokens)} token(s)", title_justify="left")
    for col in ("id", "name", "scope", "created", "expires", "last used", "revoked"):
        table.add_column(col)
    for t in tokens:
        table.add_row(
            str(t["id"]),
            escape(t["name"]),
            t["scope"],
            t["created_at"],
            t.get("expires_at") or "never",
            t.get("last_used_at") or "-",
            t.get("revoked_at") or "",
        )
    console().print(table)


@app.command()
def revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (saveos tokens list).")],
) -> None:
    """Revoke a token at once (the last live admin token cannot be revoked)."""
    with api() as client:
        row = client.revoke_token(token_id)
    typer.echo(f"token {row['id']} ({row['name']}) revoked at {row['revoked_at']}")


def audit(
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=1, max=1000, help="How many, newest first."),
    ] = 50,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only this action, e.g. jobs.restore."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The audit log: every state-changing call, by token (who), action (what) and time."""
    with api() as client:
        events = client.audit(limit, action)
    if as_json:
        typer.echo(json.dumps({"events": events}, indent=2))
        return
    from rich.markup import escape
    from rich.table import Table

    from saveos_cli.safe_text import plain

    table = Table(title=f"{len(events)} event(s), newest first", title_justify="left")
    for col in ("at", "who", "action", "target", "from", "detail"):
        table.add_column(col)
    for e in events:
        detail = json.dumps(e.get("detail") or {}, separators=(",", ":"))
        table.add_row(
            e["at"],
            escape(plain(e["actor"])),
            e["action"],
            escape(plain(e.get("target") or "")),
            e.get("client") or "",
            escape(plain(detail[:120])),
        )
    console().print(table)
