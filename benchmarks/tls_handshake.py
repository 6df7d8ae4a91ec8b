"""What one TLS handshake costs the API server and an agent, in CPU, without the network: the
two ends of a handshake in one process over memory BIOs (the standard library's ssl, OpenSSL
underneath), each side's CPU timed apart. Cases: the server context of `saveos server`
(ECDSA P-256 key from `saveos ca init`, one TLS 1.3 ticket), OpenSSL's default of two tickets,
an RSA-2048 server key (the usual default elsewhere), and a resumed session (what the agent's
second connection of a run does). The baseline is the full handshake with our context.

    python benchmarks/tls_handshake.py [--count 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import finish, median  # noqa: E402

from saveos_cli import tls  # noqa: E402


def _certs(directory: Path, rsa: bool) -> tls.Paths:
    paths = tls.Paths(directory)
    tls.make_ca(paths, "bench CA")
    if rsa:
        from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

        original = tls._key
        tls._key = lambda: rsa_keys.generate_private_key(public_exponent=65537, key_size=2048)
        try:
            tls.issue_server(paths, ["localhost"], ["127.0.0.1"])
        finally:
            tls._key = original
    else:
        tls.issue_server(paths, ["localhost"], ["127.0.0.1"])
    return paths


def _server_context(paths: tls.Paths, tickets: int | None) -> ssl.SSLContext:
    def default() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(paths.server_cert), str(paths.server_key))
        return context

    context = tls.server_context(None, default)
    if tickets is not None:
        context.num_tickets = tickets
    return context


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, session=None):
    """(client CPU s, server CPU s, the client's session, resumed?) of one handshake and one
    small request and answer (which carries the TLS 1.3 tickets to the client)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1", session=session)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    spent = {"c": 0.0, "s": 0.0}

    def step(side: str, fn) -> bool:
        start = time.thread_time()
        try:
            fn()
            return True
        except ssl.SSLWantReadError:
            return False
        finally:
            spent[side] += time.thread_time() - start

    c_done = s_done = False
    while not (c_done and s_done):
        c_done = c_done or step("c", c.do_handshake)
        s_in.write(c_out.read())
        s_done = s_done or step("s", s.do_handshake)
        c_in.write(s_out.read())
    step("c", lambda: c.write(b"POST /api/v1/agents/heartbeat HTTP/1.1\r\n\r\n"))
    s_in.write(c_out.read())
    step("s", lambda: (s.read(), s.write(b"HTTP/1.1 200 OK\r\n\r\n")))
    c_in.write(s_out.read())
    step("c", c.read)
    return spent["c"], spent["s"], c.session, c.session_reused


def _case(server, client, count: int, resume: bool) -> dict:
    c_total = s_total = 0.0
    session, reused = None, 0
    for _ in range(count):
        c, s, new, was = _handshake(server, client, session if resume else None)
        c_total, s_total, reused = c_total + c, s_total + s, reused + was
        if resume:
            session = new
    return {
        "server_ms": s_total * 1000 / count,
        "client_ms": c_total * 1000 / count,
        "resumed": reused / count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saveos-tlshs-") as tmp:
        ecdsa, rsa = _certs(Path(tmp) / "ec", False), _certs(Path(tmp) / "rsa", True)
        client_ec = ssl.create_default_context(cafile=str(ecdsa.ca_cert))
        client_rsa = ssl.create_default_context(cafile=str(rsa.ca_cert))
        cases = {
            "ours: ECDSA P-256, TLS 1.3, 1 ticket (baseline)": (
                _server_context(ecdsa, None), client_ec, False),
            "ECDSA P-256, 2 tickets (OpenSSL's default)": (
                _server_context(ecdsa, 2), client_ec, False),
            "RSA-2048, 1 ticket": (_server_context(rsa, None), client_rsa, False),
            "ours, resumed session (the agent's next connection)": (
                _server_context(ecdsa, None), client_ec, True),
        }  # fmt: skip
        runs: dict[str, list[dict]] = {name: [] for name in cases}
        for i in range(args.repeat):
            for name, (server, client, resume) in cases.items():
                load = os.getloadavg()[0]
                run = _case(server, client, args.count, resume) | {"loadavg_1m": load}
                runs[name].append(run)
                print(
                    f"run {i + 1} {name:52} server {run['server_ms']:.3f} ms  client"
                    f" {run['client_ms']:.3f} ms  resumed {run['resumed']:.0%}  load {load:.1f}",
                    flush=True,
                )
    results = {}
    base = None
    for name, rs in runs.items():
        server_ms = median([r["server_ms"] for r in rs])
        client_ms = median([r["client_ms"] for r in rs])
        base = base or (server_ms, client_ms)
        results[name] = {
            "server_ms": server_ms,
            "client_ms": client_ms,
            "server_ratio": server_ms / base[0],
            "client_ratio": client_ms / base[1],
            "runs": rs,
        }
        print(
            f"median {name:52} server {server_ms:.3f} ms ({server_ms / base[0]:.2f}x)  client"
            f" {client_ms:.3f} ms ({client_ms / base[1]:.2f}x)"
        )
    finish("tls_handshake", {"params": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
