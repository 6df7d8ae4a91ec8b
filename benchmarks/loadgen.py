"""Closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight each.

Raw asyncio streams on uvloop rather than an HTTP client library, so that on a 2-core machine
the generator spends as little CPU as possible per request (httpx costs several times more).
Prints one JSON line: requests, errors (non-2xx or broken connections), rate and latencies,
and its own CPU seconds (`client_cpu_s`: on one machine it competes with the server).

--per-connection K: a new connection (with TLS a full handshake) after every K requests, as an
agent process opens one for the K requests of its run (K=1: a heartbeat from a timer; 0, the
default: one connection for the whole run). --procs P: the N connections spread over P
processes, so the generator is not held to one core.

    python benchmarks/loadgen.py --url http://127.0.0.1:PORT --path /api/v1/agents/heartbeat \
        --method POST --body '{"agent_version": "1"}' --tokens FILE --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time


def _request(method: str, host: str, path: str, token: str | None, body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: saveos-loadgen"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    lower = head.lower()
    idx = lower.find(b"content-length:")
    if idx >= 0:
        length = int(lower[idx + 15 : lower.index(b"\r\n", idx)])
    elif b"transfer-encoding: chunked" in lower:
        raise RuntimeError("chunked responses are not expected here")
    if length:
        await reader.readexactly(length)
    return status


async def exchange(reader: asyncio.StreamReader, writer, raw: bytes) -> int | None:
    """One request on a kept-alive connection: its status, or None when the connection broke."""
    writer.write(raw)
    try:
        return await _read_response(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def _client(host, port, raw, deadline, warmup_end, lat, counters, tls=None, per_conn=0):
    def connect():
        # With TLS, server_hostname is the address: the certificate's SAN holds it.
        return asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)

    reader, writer = await connect()
    on_conn = 0
    try:
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            if per_conn and on_conn >= per_conn:
                # What an agent does: a new connection (and TLS handshake) per run.
                writer.close()
                reader, writer = await connect()
                on_conn = 0
            on_conn += 1
            status = await exchange(reader, writer, raw)
            if status is None:
                counters["errors"] += 1
                writer.close()
                reader, writer = await connect()
                on_conn = 0
                continue
            end = time.perf_counter()
            if 200 <= status < 300:
                counters["acked_total"] += 1
            if start < warmup_end:
                continue
            if 200 <= status < 300:
                lat.append(end - start)
            else:
                counters["errors"] += 1
                counters.setdefault(f"status_{status}", 0)
                counters[f"status_{status}"] += 1
    finally:
        writer.close()


async def _run(args, first: int, count: int) -> tuple[list[float], dict]:
    scheme, _, rest = args.url.partition("://")
    host, _, port = rest.partition(":")
    port = int(port.rstrip("/"))
    tls = None
    if scheme == "https":
        import ssl

        tls = ssl.create_default_context(cafile=args.cafile)
    tokens = [None]
    if args.tokens:
        with open(args.tokens) as fh:
            tokens = [line.strip() for line in fh if line.strip()]
    body = args.body.encode() if args.body else b""
    now = time.perf_counter()
    warmup_end = now + args.warmup
    deadline = warmup_end + args.duration
    lat: list[float] = []
    counters = {"errors": 0, "acked_total": 0}
    clients = [
        _client(
            host,
            port,
            _request(args.method, f"{host}:{port}", args.path, tokens[i % len(tokens)], body),
            deadline,
            warmup_end,
            lat,
            counters,
            tls,
            args.per_connection,
        )
        for i in range(first, first + count)
    ]
    await asyncio.gather(*clients)
    return lat, counters


def _in_process(args, first: int, count: int) -> tuple[list[float], dict]:
    import resource

    try:
        from uvloop import new_event_loop
    except ImportError:
        new_event_loop = None
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        lat, counters = runner.run(_run(args, first, count))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters["client_cpu_s"] = usage.ru_utime + usage.ru_stime
    return lat, counters


def _child(work, work_args, pipe) -> None:
    pipe.send(work(*work_args))
    pipe.close()


def fan_out(work, shares: list[tuple]) -> list:
    """work(*share) for each share, each in a forked process of its own when there are
    several (so that the generator is not held to one core); their results in order."""
    import multiprocessing

    if len(shares) == 1:
        return [work(*shares[0])]
    ctx = multiprocessing.get_context("fork")
    pipes, children = [], []
    for share in shares:
        mine, theirs = ctx.Pipe()
        child = ctx.Process(target=_child, args=(work, share, theirs))
        child.start()
        pipes.append(mine)
        children.append(child)
    parts = [pipe.recv() for pipe in pipes]
    for child in children:
        child.join()
    return parts


def main(args) -> dict:
    procs = max(1, min(args.procs, args.concurrency))
    shares = [args.concurrency // procs + (i < args.concurrency % procs) for i in range(procs)]
    firsts = [sum(shares[:i]) for i in range(procs)]
    parts = fan_out(_in_process, [(args, f, n) for f, n in zip(firsts, shares, strict=True)])
    lat = sorted(x for part in parts for x in part[0])
    counters: dict = {}
    for _, part in parts:
        for key, value in part.items():
            counters[key] = counters.get(key, 0) + value

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "requests": len(lat),
        "rate": len(lat) / args.duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        **counters,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--tokens", help="file with one bearer token per line")
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--cafile", help="the CA to verify an https:// URL with")
    parser.add_argument("--per-connection", type=int, default=0, help="requests per connection")
    parser.add_argument("--reconnect", action="store_true", help="--per-connection 1")
    parser.add_argument("--procs", type=int, default=1, help="generator processes")
    args = parser.parse_args()
    if args.reconnect:
        args.per_connection = 1
    print(json.dumps(main(args)))
