"""Real receivers for alert tests: an SMTP server (aiosmtpd) and an HTTP webhook receiver,
both on loopback, both recording what arrived."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from saveos_api.models import Agent, Snapshot


class Mailbox:
    """aiosmtpd on 127.0.0.1:port; `stop()` and `start()` again to take it down for a while."""

    def __init__(self, port: int):
        self.port = port
        self.messages: list[email.message.EmailMessage] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)
        return "250 OK"

    def start(self) -> Mailbox:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=saveos@example.com&to=ops@example.com"

    def subjects(self) -> list[str]:
        return [str(m["subject"]) for m in self.messages]

    def text(self, msg) -> str:
        part = msg.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""


class Webhook:
    """A ThreadingHTTPServer that records every JSON body POSTed to it (Apprise json://)."""

    def __init__(self, port: int, status: int = 200):
        self.port = port
        self.status = status
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if hook.status == 200:
                    hook.posts.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(hook.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Webhook:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str = "/hook/s3cr3t-token") -> str:
        return f"json://127.0.0.1:{self.port}{path}"

    def titles(self) -> list[str]:
        return [p.get("title", "") for p in self.posts]


def bulk_agents(db, count: int, late_at: datetime, interval_s: int = 3600) -> None:
    """`count` agents heartbeating, last good backup such that they all turn late at late_at."""
    finished = late_at - timedelta(seconds=interval_s)
    now = datetime.now(UTC)
    with db.sessions() as session:
        ids = session.scalars(
            sa.insert(Agent).returning(Agent.id),
            [
                {
                    "name": f"flood{n:04}",
                    "labels": {},
                    "backup_interval_s": interval_s,
                    "backup_grace_s": 3600,
                    "heartbeat_interval_s": 86400,
                    "created_at": now - timedelta(days=1),
                    "last_heartbeat_at": now,
                    "heartbeat_count": 1,
                }
                for n in range(count)
            ],
        ).all()
        session.execute(
            sa.insert(Snapshot),
            [
                {
                    "agent_id": agent_id,
                    "report_id": uuid.uuid4().hex,
                    "repository": "/var/lib/saveos/repo",
                    "archive": f"flood-{agent_id}",
                    "started_at": finished - timedelta(seconds=10),
                    "finished_at": finished,
                    "nfiles": 1,
                    "original_size": 1,
                    "compressed_size": 1,
                    "deduplicated_size": 1,
                    "exit_status": "ok",
                    "rc": 0,
                    "warnings": [],
                    "received_at": now,
                }
                for agent_id in ids
            ],
        )
        session.commit()
