"""bench/webhook: a bounded, open-loop load of signed Twilio webhooks (loopback) through the distributed
stack — the gateway and one worker per service as separate processes over Redis and Postgres — with the
offline answerer and replies sent through the twilio SDK to a local fake Twilio server.

Prints answered messages/s sustained, webhook ack p50/p95/p99, end-to-end p50/p95/p99 (webhook sent ->
reply accepted by "Twilio"), lost and duplicated replies and each process's RSS, beside the goals.

    .venv/bin/python bench/webhook.py [--rate 210] [--seconds 30] [--users 1000] [--tracing off|otlp|file]

The default rate is a little over the 200/s goal: the answered rate counts up to the last reply, so it can only
show the goal met when more than the goal is offered.

--tracing otlp runs every process with OpenTelemetry on, exporting OTLP/HTTP to a local sink (a stand-in
for the collector that accepts and counts the batches); --tracing file writes JSON-lines spans instead. Run
once with and once without to read the throughput and CPU cost of tracing. --sample-ratio 0.1 traces one
turn in ten (TRACE_SAMPLE_RATIO; every span of a sampled turn is kept, the others cost almost nothing);
--max-per-second N caps the traced turns a second (TRACE_MAX_PER_SECOND, default 50; 0 traces every turn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
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
from libs.common.settings import TelemetrySettings  # noqa: E402
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


class RssSampler:
    """Every process's RSS every ``every`` seconds while the load runs (a growth trend shows a leak)."""

    def __init__(self, pids: dict[str, int], every: float) -> None:
        self.pids, self.every = pids, every
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            for name, pid in self.pids.items():
                self.samples[name].append((time.monotonic() - t0, rss_mb(pid)))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> RssSampler:
        if self.every > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def slope_mb_per_min(self, name: str) -> float:
        """Least-squares slope over the second half of the run (after warm-up), in MB per minute."""
        points = self.samples[name][len(self.samples[name]) // 2:]
        if len(points) < 2:
            return float("nan")
        mean_t = sum(t for t, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        var = sum((t - mean_t) ** 2 for t, _ in points)
        if var == 0:
            return float("nan")
        return sum((t - mean_t) * (m - mean_m) for t, m in points) / var * 60


class OtlpSink:
    """A stand-in for the OTel collector: accepts OTLP/HTTP export requests on loopback and counts them, so
    the services pay the real cost of encoding and sending their spans."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                sink.requests += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


def build_parser(description: str = __doc__ or "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=210.0, help="webhooks per second offered")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--users", type=int, default=1000, help="distinct sender numbers")
    parser.add_argument("--concurrency", type=int, default=64, help="webhooks in flight at most")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="seconds without a new reply after which the unanswered count as lost")
    parser.add_argument("--repo", default=str(ROOT), help="repository indexed for the questions")
    parser.add_argument("--pool", choices=["threads", "solo", "prefork"], default="threads", help="WORKER_POOL")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="WORKER_CONCURRENCY")
    parser.add_argument("--rss-every", type=float, default=0.0,
                        help="sample every process's RSS this often (s) and print the trend; 0: start and end only")
    parser.add_argument("--sample-ratio", type=float, default=1.0,
                        help="TRACE_SAMPLE_RATIO with tracing on: the share of turns traced")
    parser.add_argument("--max-per-second", type=float, default=None,
                        help="TRACE_MAX_PER_SECOND with tracing on (default: the setting's own, 50; 0: every turn)")
    parser.add_argument("--tracing", choices=["off", "otlp", "file"], default="off",
                        help="OpenTelemetry in every process: off, OTLP/HTTP to a local sink, or a JSON-lines file")
    parser.add_argument("--json", default="", help="also write the figures to this file (bench/tracing_cost)")
    parser.add_argument("--barrier", default="",
                        help="start the load only when every bench given this path is ready (path.<pid> files, "
                             "--parties of them): bench/tracing_cost --paired runs two at once")
    parser.add_argument("--parties", type=int, default=2, help="benches meeting at --barrier")
    return parser


def meet(barrier: Path, parties: int, timeout: float = 300.0) -> None:
    """Wait until ``parties`` benches (this one included) have reached ``barrier``."""
    Path(f"{barrier}.{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.parent.glob(f"{barrier.name}.*"))) < parties:
        if time.monotonic() > deadline:
            raise SystemExit(f"the other benches did not reach {barrier} in {timeout:.0f} s")
        time.sleep(0.005)


def main() -> None:
    run(build_parser().parse_args())


def run(args: argparse.Namespace) -> None:

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
        sink = OtlpSink() if args.tracing == "otlp" else None
        span_file = Path(tmp) / "spans.jsonl"
        if args.tracing != "off":
            env["TRACE_SAMPLE_RATIO"] = str(args.sample_ratio)
            if args.max_per_second is not None:
                env["TRACE_MAX_PER_SECOND"] = str(args.max_per_second)
        if sink is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.url
        elif args.tracing == "file":
            env["REPOTALK_TRACE_FILE"] = str(span_file)
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
            requests = signed_requests(stack.base_url, twilio.auth_token, int(args.rate * args.seconds), args.users)
            if args.barrier:
                meet(Path(args.barrier), args.parties)
            rss_start = {name: rss_mb(proc.pid) for name, proc in stack.procs.items()}
            cpu_start = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
            print(f"stack up: {', '.join(stack.procs)}; offering {args.rate:.0f}/s for {args.seconds:.0f} s")
            host, port = stack.base_url.split("://", 1)[1].split(":")
            t_start = time.monotonic()
            bench_cpu_start = time.process_time()
            with RssSampler({name: proc.pid for name, proc in stack.procs.items()}, args.rss_every) as sampler:
                offered = asyncio.run(
                    offer_requests(host, int(port), [r for _, r in requests], args.rate, args.concurrency)
                )
                t_sent = time.monotonic()
                acks, refused = offered.acks, offered.refused
                sent_at = {sender: offered.sent[i] for i, (sender, _) in enumerate(requests) if offered.ok[i]}
                # A backlog is not a loss: keep waiting while replies still come. What is unanswered once
                # no reply has come for --drain seconds counts as lost.
                answered_so_far, progress_at = -1, t_sent
                while True:
                    answered_now = len({m.to for m in twilio.messages} & sent_at.keys())
                    now = time.monotonic()
                    if answered_now >= len(sent_at) or now - progress_at > args.drain:
                        break
                    if answered_now != answered_so_far:
                        answered_so_far, progress_at = answered_now, now
                    time.sleep(0.2)
            rss_end = {name: rss_mb(proc.pid) for name, proc in stack.procs.items()}
            cpu_end = {name: cpu_seconds(proc.pid) for name, proc in stack.procs.items()}
            bench_cpu = time.process_time() - bench_cpu_start
        finally:
            stack.stop()
            if sink is not None:
                sink.close()
        span_names: Counter[str] = Counter()
        if span_file.exists():
            with span_file.open() as lines:
                for line in lines:
                    record = json.loads(line)
                    span_names[f"{record['service']}: {record['name']}"] += 1
        spans_written = sum(span_names.values())

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
        Row("largest RSS of any process (MB)", max(max(rss_start.values()), max(rss_end.values())), 150.0, "MB"),
    ]
    print_table("bench/webhook — distributed stack, offline answerer, loopback", rows, "goal")
    print("\nper process: RSS (MB) start -> end, CPU ms per answered message")
    cpu_ms = {name: (cpu_end[name] - cpu_start[name]) * 1000 / max(1, len(answered)) for name in cpu_start}
    for name in rss_start:
        print(f"  {name:<12} {rss_start[name]:7.1f} -> {rss_end.get(name, float('nan')):7.1f}   "
              f"{cpu_ms[name]:6.2f} ms")
    total_cpu = sum(cpu_ms.values())
    print(f"  {'all services':<12} {'':>18}   {total_cpu:6.2f} ms")
    if args.json:
        figures = {row.metric: row.measured for row in rows} | {"cpu_ms_per_message": total_cpu} | {
            f"cpu_ms_per_message.{name}": ms for name, ms in cpu_ms.items()}
        Path(args.json).write_text(json.dumps(figures))
    print(f"  {'this bench':<12} {'(load + fake Twilio)':>18}   {bench_cpu * 1000 / max(1, len(answered)):6.2f} ms")
    if args.rss_every > 0:
        print(f"\nRSS (MB) every {args.rss_every:.0f} s, and its slope over the second half of the run (MB/min):")
        for name, samples in sampler.samples.items():
            trail = " ".join(f"{mb:.0f}" for _, mb in samples)
            print(f"  {name:<12} {sampler.slope_mb_per_min(name):+6.2f} MB/min   {trail}")
    if sink is not None:
        cap = args.max_per_second if args.max_per_second is not None else TelemetrySettings().max_traces_per_second
        limit = f"at most {cap:g} a second" if cap > 0 else "no cap"
        print(f"\ntracing: {args.sample_ratio:.0%} of turns sampled, {limit}; OTLP/HTTP to a local sink: "
              f"{sink.requests} export requests, {sink.bytes / 1e6:.1f} MB "
              f"({sink.bytes / max(1, len(answered)) / 1000:.1f} kB per answered message)")
    elif args.tracing == "file":
        per_message = max(1, len(answered))
        print(f"\ntracing: {spans_written} spans written ({spans_written / per_message:.1f} per message); "
              "per message, by service and name:")
        for name, count in span_names.most_common(25):
            print(f"  {count / per_message:6.2f}  {name}")
    else:
        print("\ntracing: off (run again with --tracing otlp to measure its cost)")


if __name__ == "__main__":
    main()
