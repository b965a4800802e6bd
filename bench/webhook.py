"""bench/webhook: a bounded, open-loop load of signed Twilio webhooks (loopback) through the distributed
stack — the gateway and one worker per service as separate processes over Redis and Postgres — with the
offline answerer and replies sent through the twilio SDK to a local fake Twilio server.

Prints answered messages/s sustained, webhook ack p50/p95/p99, end-to-end p50/p95/p99 (webhook sent ->
reply accepted by "Twilio"), lost and duplicated replies and each process's RSS, beside the goals.

    .venv/bin/python bench/webhook.py [--rate 200] [--seconds 30] [--users 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
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
    rss_mb,
    scratch_postgres,
    scratch_redis_prefix,
)
from libs.common.lifecycle import reset_process_state  # noqa: E402
from repotalk.client import signed_webhook, webhook_params  # noqa: E402
from repotalk.stack import Stack  # noqa: E402
from tests.fakes.twilio_server import FakeTwilio  # noqa: E402

QUESTIONS = [
    "where is the webhook signature verified?",
    "how does the outbox relay publish events?",
    "how are long replies split into chunks?",
    "how do sessions expire?",
    "what happens when the same MessageSid arrives twice?",
    "where is the rate limit counted?",
    "/search def split_message",
    "how does the offline answerer format code?",
]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signed_requests(base_url: str, auth_token: str, count: int, users: int) -> list[tuple[str, bytes]]:
    """(sender, complete HTTP/1.1 request) pairs, signed ahead of time so the timed run spends no CPU on them.
    One message per sender address: the reply that arrives for an address answers that message."""
    host_port = base_url.split("://", 1)[1]
    url = f"{base_url}/webhooks/twilio"
    requests = []
    for i in range(count):
        sender = f"whatsapp:+1555{i % users:07d}{i // users:03d}"
        params = webhook_params(QUESTIONS[i % len(QUESTIONS)], sender, f"SM{i:032x}")
        body = urlencode(params).encode()
        head = (
            f"POST /webhooks/twilio HTTP/1.1\r\nHost: {host_port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Twilio-Signature: {signed_webhook(url, params, auth_token)['X-Twilio-Signature']}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append((sender, head.encode() + body))
    return requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="webhooks per second offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--users", type=int, default=1000, help="distinct sender numbers")
    parser.add_argument("--concurrency", type=int, default=64, help="webhooks in flight at most")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the last replies")
    parser.add_argument("--repo", default=str(ROOT), help="repository indexed for the questions")
    parser.add_argument("--pool", choices=["threads", "solo", "prefork"], default="threads", help="WORKER_POOL")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="WORKER_CONCURRENCY")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="repotalk-bench-") as tmp, scratch_postgres() as pg_url, \
            scratch_redis_prefix() as prefix, FakeTwilio() as twilio:
        env = {
            "REPOTALK_ENV": "test",
            "REPOTALK_DATA_DIR": f"{tmp}/data",
            "INDEX_DIR": f"{tmp}/index",
            "DATABASE_URL": pg_url,
            "BROKER_URL": REDIS_URL,
            "BROKER_KEY_PREFIX": prefix,
            "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_API_BASE_URL": twilio.base_url,
            # Every sender sends once here; the per-user limit is exercised by the tests, not the bench.
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "WARNING",
            "WORKER_POOL": args.pool,
            "WORKER_CONCURRENCY": str(args.worker_concurrency),
        }
        os.environ.update(env)
        reset_process_state()
        from libs.common.schema import migrate
        from services.code_search.engine import index_repository

        migrate()
        summary = index_repository(Path(args.repo), name="repotalk")
        print(f"indexed {summary.files} files, {summary.symbols} symbols in {summary.seconds:.1f} s")
        stack = Stack(env=env, run_dir=Path(tmp) / "run", port=_free_port())
        stack.start()
        try:
            rss_start = {name: rss_mb(proc.pid) for name, proc in stack.procs.items()}
            cpu_start = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
            print(f"stack up: {', '.join(stack.procs)}; offering {args.rate:.0f}/s for {args.seconds:.0f} s")
            requests = signed_requests(stack.base_url, twilio.auth_token, int(args.rate * args.seconds), args.users)
            host, port = stack.base_url.split("://", 1)[1].split(":")
            t_start = time.monotonic()
            bench_cpu_start = time.process_time()
            offered = asyncio.run(
                offer_requests(host, int(port), [r for _, r in requests], args.rate, args.concurrency)
            )
            t_sent = time.monotonic()
            acks, refused = offered.acks, offered.refused
            sent_at = {sender: offered.sent[i] for i, (sender, _) in enumerate(requests) if offered.ok[i]}
            deadline = t_sent + args.drain
            while time.monotonic() < deadline:
                answered = {m.to for m in twilio.messages}
                if len(answered & sent_at.keys()) >= len(sent_at):
                    break
                time.sleep(0.2)
            rss_end = {name: rss_mb(proc.pid) for name, proc in stack.procs.items()}
            cpu_end = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
            bench_cpu = time.process_time() - bench_cpu_start
        finally:
            stack.stop()

    messages = twilio.messages
    first_reply: dict[str, float] = {}
    bodies: Counter[tuple[str, str | None]] = Counter()
    for message in messages:
        first_reply.setdefault(message.to, message.received_monotonic)
        bodies[(message.to, message.body)] += 1
    answered = [s for s in sent_at if s in first_reply]
    lost = len(sent_at) - len(answered)
    duplicated = sum(count - 1 for count in bodies.values() if count > 1)
    e2e = [(first_reply[s] - sent_at[s]) * 1000 for s in answered]
    last = max((first_reply[s] for s in answered), default=t_start)
    throughput = len(answered) / (last - t_start) if answered else 0.0

    print(f"\noffered {int(args.rate * args.seconds)} webhooks in {t_sent - t_start:.1f} s; "
          f"accepted {len(sent_at)}, refused {refused}; replies received {len(messages)}")
    rows = [
        Row("answered messages/s (sustained)", throughput, 200.0, "msg/s", higher_is_better=True),
        Row("webhook ack p50 (ms)", percentile(acks, 50), None, "ms"),
        Row("webhook ack p95 (ms)", percentile(acks, 95), None, "ms"),
        Row("webhook ack p99 (ms)", percentile(acks, 99), 25.0, "ms"),
        Row("end-to-end p50 (ms)", percentile(e2e, 50), None, "ms"),
        Row("end-to-end p95 (ms)", percentile(e2e, 95), 150.0, "ms"),
        Row("end-to-end p99 (ms)", percentile(e2e, 99), None, "ms"),
        Row("lost replies", float(lost), 0.0, ""),
        Row("duplicated replies", float(duplicated), 0.0, ""),
    ]
    print_table("bench/webhook — distributed stack, offline answerer, loopback", rows, "goal")
    print("\nper process: RSS (MB) start -> end, CPU ms per answered message")
    for name in rss_start:
        cpu_ms = (cpu_end[name] - cpu_start[name]) * 1000 / max(1, len(answered))
        print(f"  {name:<12} {rss_start[name]:7.1f} -> {rss_end.get(name, float('nan')):7.1f}   {cpu_ms:6.2f} ms")
    total_cpu = sum(cpu_end[n] - cpu_start[n] for n in cpu_start) * 1000 / max(1, len(answered))
    print(f"  {'all services':<12} {'':>18}   {total_cpu:6.2f} ms")
    print(f"  {'this bench':<12} {'(load + fake Twilio)':>18}   {bench_cpu * 1000 / max(1, len(answered)):6.2f} ms")


if __name__ == "__main__":
    main()
