"""bench/hotpath_gateway: CPU per event on the gateway's two hot paths, on Postgres.

  ingress  the HTTP process (`repotalk gateway` under uvicorn, outbox relay included, publishing to Redis)
           takes --webhooks signed webhooks offered open-loop at --rate/s; its CPU (from /proc) is divided
           by the webhooks it accepted, once the outbox has drained. Ack latencies are printed too (only
           this process and the load driver share the cores here, unlike bench/webhook.py). The driver
           sends pre-signed requests over bare asyncio streams (~0.3 ms CPU per webhook, where an HTTP
           library costs milliseconds); `signed_requests` and `offer_webhooks` are reusable.
  sender   `handle_reply_ready` (the gateway worker's handler: reply.ready -> Twilio SDK -> FakeTwilio,
           which runs in a child process so its CPU is not counted) for --replies single-chunk replies;
           process CPU per reply, SQL statements and transactions per reply. Publishes are captured
           (a Celery publish costs ~0.3 ms more in the real worker).

    .venv/bin/python bench/hotpath_gateway.py [--part all|ingress|sender] [--webhooks 3000] [--rate 200]
                                              [--replies 1000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    REDIS_URL,
    Row,
    cpu_seconds,
    offer_requests,
    percentile,
    print_table,
    scratch_postgres,
    scratch_redis_prefix,
)
from libs.common.lifecycle import reset_process_state  # noqa: E402
from repotalk.client import signed_webhook, webhook_params  # noqa: E402

# The gateway before the hot-path work, measured with this file (defaults, 2 cores, load average
# 1-2, median of 3 runs): the reference the figures are printed against. Then the ingress also ran
# without httptools/uvloop (h11 and asyncio) and acked 200/s with p50 400-470 ms, p99 670-780 ms.
BASELINE = {
    "ingress_cpu_ms": 7.5,
    "sender_cpu_ms": 8.7,
    "sender_statements": 6.0,
    "sender_transactions": 5.0,
}

ANSWER = (
    "The signature is checked in `services/gateway/signature.py:97` (is_valid_signature), called from "
    "`services/gateway/webhooks.py:46` before anything is stored:\n\n```python\n"
    "if not is_valid_signature(settings.twilio.auth_token, url, form.signed_params, signature, algorithm):\n"
    "    raise HTTPException(403, f\"invalid {SIGNATURE_HEADER} for {url}\")\n```\n\n"
    "The URL is rebuilt from PUBLIC_BASE_URL or trusted X-Forwarded-* headers, because behind TLS "
    "termination the URL Twilio signed is the public one. Repeated form keys are kept (a multi-dict). "
) * 2

FAKE_TWILIO = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fakes.twilio_server import FakeTwilio
with FakeTwilio() as fake:
    print(fake.base_url, fake.account_sid, fake.auth_token, flush=True)
    sys.stdin.read()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_twilio_process() -> Iterator[tuple[str, str, str]]:
    """FakeTwilio in a child process: (base_url, account_sid, auth_token)."""
    proc = subprocess.Popen([sys.executable, "-c", FAKE_TWILIO.format(root=str(ROOT))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url, account_sid, auth_token = proc.stdout.readline().split()
        yield base_url, account_sid, auth_token
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def _env(tmp: str, pg_url: str, prefix: str, twilio: tuple[str, str, str]) -> dict[str, str]:
    base_url, account_sid, auth_token = twilio
    return {
        "REPOTALK_ENV": "test",
        "REPOTALK_DATA_DIR": f"{tmp}/data",
        "INDEX_DIR": f"{tmp}/index",
        "DATABASE_URL": pg_url,
        "BROKER_URL": REDIS_URL,
        "BROKER_KEY_PREFIX": prefix,
        "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
        "TWILIO_ACCOUNT_SID": account_sid,
        "TWILIO_AUTH_TOKEN": auth_token,
        "TWILIO_API_BASE_URL": base_url,
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
    }


# -- ingress ---------------------------------------------------------------------------------------


def signed_requests(host: str, port: int, auth_token: str, start: int, count: int) -> list[bytes]:
    """Complete HTTP/1.1 requests, signed ahead of time so the timed run spends no CPU on them."""
    url = f"http://{host}:{port}/webhooks/twilio"
    requests = []
    for i in range(start, start + count):
        sender = f"whatsapp:+1555{i % 1000:07d}{i // 1000:03d}"
        params = webhook_params("where is the webhook signature verified?", sender, f"SM{i:032x}")
        body = urlencode(params).encode()
        head = (
            f"POST /webhooks/twilio HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {signed_webhook(url, params, auth_token)['X-Twilio-Signature']}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def offer_webhooks(host: str, port: int, requests: list[bytes], rate: float,
                         max_connections: int = 64) -> tuple[list[float], int]:
    offered = await offer_requests(host, port, requests, rate, max_connections)
    return offered.acks, offered.refused


def _wait_outbox_drained(timeout: float = 60.0) -> None:
    from services.gateway.outbox import pending_count

    deadline = time.monotonic() + timeout
    while pending_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the relay's last commit, and anything the batcher flushes after it


def bench_ingress(env: dict[str, str], tmp: str, webhooks: int, rate: float) -> list[Row]:
    from repotalk.stack import HTTP, Stack

    stack = Stack(env=env, run_dir=Path(tmp) / "run", port=_free_port(), services=())
    stack.start()
    try:
        pid = stack.procs[HTTP].pid
        token = env["TWILIO_AUTH_TOKEN"]
        warm = signed_requests("127.0.0.1", stack.port, token, 10_000_000, 200)
        timed = signed_requests("127.0.0.1", stack.port, token, 0, webhooks)
        asyncio.run(offer_webhooks("127.0.0.1", stack.port, warm, rate))  # imports, pools, code paths
        _wait_outbox_drained()
        cpu0, driver0 = cpu_seconds(pid), time.process_time()
        acks, refused = asyncio.run(offer_webhooks("127.0.0.1", stack.port, timed, rate))
        driver_ms = (time.process_time() - driver0) * 1000 / max(1, webhooks)
        _wait_outbox_drained()
        cpu_ms = (cpu_seconds(pid) - cpu0) * 1000 / max(1, webhooks - refused)
        if refused or not stack.procs[HTTP].alive():
            print(stack.tail(HTTP))
    finally:
        stack.stop()
    print(f"ingress: {webhooks} webhooks at {rate:.0f}/s, {refused} refused; the load driver (this process) "
          f"used {driver_ms:.2f} ms CPU per webhook")
    return [
        Row("ingress CPU per webhook (ms)", cpu_ms, BASELINE["ingress_cpu_ms"] or None, "ms"),
        Row("ingress ack p50 (ms)", percentile(acks, 50), None, "ms"),
        Row("ingress ack p99 (ms)", percentile(acks, 99), None, "ms"),
    ]


# -- sender ----------------------------------------------------------------------------------------


class _StatementCounter:
    def __init__(self) -> None:
        self.statements = 0
        self.transactions = 0

    def install(self) -> None:
        from sqlalchemy import event

        from libs.common import db

        engine = db.get_engine()

        def on_execute(*_: Any) -> None:
            self.statements += 1

        def on_begin(*_: Any) -> None:
            self.transactions += 1

        event.listen(engine, "before_cursor_execute", on_execute)
        event.listen(engine, "begin", on_begin)


def bench_sender(replies: int, profile: bool) -> list[Row]:
    from libs.common import bus
    from libs.common.events import Envelope, ReplyReady
    from services.gateway.inbound import InboundMessageIn, record_inbound
    from services.gateway.worker import handle_reply_ready

    def envelopes(start: int, count: int) -> list[Envelope]:
        out = []
        for i in range(start, start + count):
            sid = f"SM{i:032x}"
            outcome = record_inbound(InboundMessageIn(sid, f"whatsapp:+1666{i:08d}", "a question"))
            out.append(Envelope.new(ReplyReady(user_id=outcome.user_id, body=ANSWER), sid, source="processor"))
        return out

    # Message sids of their own: the ingress part may have used the low ones.
    warm, timed = envelopes(20_000_000, 50), envelopes(30_000_000, replies)
    counter = _StatementCounter()
    with bus.capture_published() as published:
        for envelope in warm:
            handle_reply_ready(envelope)
        counter.install()
        profiler = cProfile.Profile() if profile else None
        cpu0 = time.process_time()
        if profiler:
            profiler.enable()
        for envelope in timed:
            handle_reply_ready(envelope)
        if profiler:
            profiler.disable()
        cpu_ms = (time.process_time() - cpu0) * 1000 / replies
    sent = sum(1 for e in published if e.type.value == "message.sent")
    if sent != replies + len(warm):
        raise SystemExit(f"sender: expected {replies + len(warm)} message.sent, got {sent}")
    print(f"sender: {replies} replies, {sent} message.sent published (warm-up included)")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(35)
        print(out.getvalue())
    return [
        Row("sender CPU per reply (ms)", cpu_ms, BASELINE["sender_cpu_ms"] or None, "ms"),
        Row("sender SQL statements per reply", counter.statements / replies, BASELINE["sender_statements"] or None,
            ""),
        Row("sender transactions per reply", counter.transactions / replies,
            BASELINE["sender_transactions"] or None, ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "ingress", "sender"), default="all")
    parser.add_argument("--webhooks", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second offered")
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile the sender loop")
    args = parser.parse_args()

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="repotalk-hotpath-") as tmp, scratch_postgres() as pg_url, \
            scratch_redis_prefix() as prefix, fake_twilio_process() as twilio:
        env = _env(tmp, pg_url, prefix, twilio)
        os.environ.update(env)
        reset_process_state()
        from libs.common.schema import migrate

        migrate()
        if args.part in ("all", "ingress"):
            rows += bench_ingress(env, tmp, args.webhooks, args.rate)
        if args.part in ("all", "sender"):
            rows += bench_sender(args.replies, args.profile)
        reset_process_state()
    print_table("bench/hotpath_gateway — Postgres, loopback", rows, "baseline")


if __name__ == "__main__":
    main()
