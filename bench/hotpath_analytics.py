"""bench/hotpath_analytics: CPU the analytics worker spends per event and per turn, on Postgres.

Realistic traffic: turns start at --rate per second; each publishes the six events a question turn does
(message.received, search.requested, search.completed with 8 hits, ai.response, reply.ready, message.sent)
from the process that publishes it in the real stack. Each publishing process gathers analytics' copies for
--window ms (the bus's Batcher, 50 ms by default) and sends them as one batch, so one turn's events reach
analytics in 4-5 different batches, mixed with other turns' events; --duplicates of the events are
redelivered in a later batch. Batches grow with the rate: median 12 events at 200 turns/s, 3 at 40/s.

Two ways of consuming the same batches, each on its own fresh database (migrated schema):
  per-event  every event through HANDLERS, one transaction each (a worker without BATCH_HANDLER)
  batch      each batch through BATCH_HANDLER (falls back to per-event when the module has none)

Prints CPU per event and per turn of the consuming process (decoding the envelopes as the bus does, and
the handler itself) and of the Postgres backends that served it, beside the figures measured before the
batch handler existed (measured at the default rate and window). Celery's own cost per task (~1.2 ms, once
per batch in batch mode) is not included.

    .venv/bin/python bench/hotpath_analytics.py [--turns 1000] [--rate 200] [--window 50] [--duplicates 0.02]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psycopg  # noqa: E402

from bench.common import PG_ADMIN, Row, cpu_seconds, print_table, scratch_postgres  # noqa: E402
from libs.common.events import (  # noqa: E402
    AIResponse,
    Envelope,
    HistoryItem,
    Hit,
    MessageReceived,
    MessageSent,
    Payload,
    ReplyReady,
    SearchCompleted,
    SearchRequested,
    derived_id,
)
from libs.common.lifecycle import reset_process_state  # noqa: E402

# Measured with this script (default arguments, median of 3 runs, on a busy 2-core machine) on the recorder
# as it was before the batch handler: one ORM transaction per event, which is also what the bus does with a
# batch when the worker has no BATCH_HANDLER.
BASELINE_US_PER_EVENT = {"per-event": 3146.0, "batch": 3146.0}
BASELINE_PG_US_PER_EVENT = {"per-event": 736.0, "batch": 736.0}

# (offset after the webhook in ms, publishing process) for each event of a question turn.
STEPS = (
    ("received", 5.0, "gateway"),
    ("requested", 15.0, "processor"),
    ("completed", 45.0, "code_search"),
    ("ai", 70.0, "ai_engine"),
    ("reply", 80.0, "processor"),
    ("sent", 400.0, "gateway"),
)
SNIPPET = "\n".join(f"    line {i} of a function body that does something useful = value_{i}  # why" for i in range(6))
ANSWER = ("The webhook signature is verified in services/gateway/webhooks.py:42 before anything is stored. "
          "It rebuilds the public URL, sorts the form fields and compares the HMAC in constant time.\n") * 6


def _payload(step: str, sid: str, user: str, start: datetime) -> Payload:
    request = SearchRequested(
        session_id="s" + user, user_id=user, query="where is the webhook signature verified?",
        history=[HistoryItem(role="user" if i % 2 == 0 else "assistant", text=ANSWER[:300]) for i in range(4)],
    )
    if step == "received":
        return MessageReceived(message_sid=sid, user_id=user, body=request.query, received_at=start)
    if step == "requested":
        return request
    if step == "completed":
        hits = [Hit(repo="repotalk", path=f"services/gateway/m{i}.py", line=10 * i + 1, end_line=10 * i + 7,
                    symbol=f"verify_{i}", kind="function", language="python", score=1.0 / (i + 1), snippet=SNIPPET)
                for i in range(8)]
        return SearchCompleted(request=request, hits=hits, took_ms=12.5, kinds=["symbol", "keyword"])
    if step == "ai":
        return AIResponse(session_id="s" + user, user_id=user, question=request.query, answer=ANSWER,
                          answerer="offline", citations=[f"repotalk/services/gateway/m{i}.py:1" for i in range(3)],
                          latency_ms=3.0)
    if step == "reply":
        return ReplyReady(user_id=user, body=ANSWER)
    return MessageSent(user_id=user, chunk_index=0, chunk_count=1, provider_sid="SM" + sid, channel="twilio")


@dataclass
class Traffic:
    batches: list[list[dict[str, Any]]]
    events: int
    turns: int


def traffic(turns: int, rate: float, duplicates: float, seed: int, prefix: str, window_ms: float = 50.0) -> Traffic:
    """The batches analytics receives, in the order their producers' batchers flush them."""
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    timed: list[tuple[float, str, dict[str, Any]]] = []
    for n in range(turns):
        sid = f"{prefix}{n:010d}"
        user = f"u{rng.randrange(1000):04d}"
        start_ms = n * 1000.0 / rate
        start = t0 + timedelta(milliseconds=start_ms)
        for step, offset, source in STEPS:
            at_ms = start_ms + offset * rng.uniform(0.8, 1.5)
            payload = _payload(step, sid, user, start)
            envelope = Envelope.new(payload, correlation_id=sid, source=source)
            envelope = envelope.model_copy(update={"id": derived_id(sid, envelope.type, step),
                                                   "occurred_at": t0 + timedelta(milliseconds=at_ms)})
            raw = envelope.to_json()
            timed.append((at_ms, source, raw))
            if rng.random() < duplicates:  # redelivered a little later
                timed.append((at_ms + rng.uniform(50, 2000), source, raw))
    phases = {source: rng.uniform(0, window_ms) for _, _, source in STEPS}
    windows: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for at_ms, source, raw in timed:
        flush = (int((at_ms - phases[source]) // window_ms) + 1) * window_ms + phases[source]
        windows.setdefault((flush, source), []).append(raw)
    batches = [windows[key] for key in sorted(windows)]
    return Traffic(batches, sum(len(b) for b in batches), turns)


def _backend_pids(dbname: str) -> list[int]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                            (dbname,)).fetchall()
    return [int(row[0]) for row in rows]


@dataclass
class Measured:
    events: int
    turns: int
    decode_s: float
    handle_s: float
    pg_s: float
    wall_s: float

    def us_per_event(self, seconds: float) -> float:
        return seconds * 1e6 / self.events

    @property
    def process_s(self) -> float:
        return self.decode_s + self.handle_s


def consume(mode: str, data: Traffic, dbname: str, worker: Any = None) -> Measured:
    if worker is None:
        from services.analytics import worker
    handlers = worker.HANDLERS
    batch_handler: Callable[[list[Envelope]], None] | None = getattr(worker, "BATCH_HANDLER", None)
    decode = handle = 0.0
    pids = _backend_pids(dbname)
    pg_before = {pid: cpu_seconds(pid) for pid in pids}
    wall = time.perf_counter()
    for raws in data.batches:
        t = time.process_time()
        envelopes = [Envelope.from_json(raw) for raw in raws]
        t2 = time.process_time()
        if mode == "batch" and batch_handler is not None:
            batch_handler(envelopes)
        else:
            for envelope in envelopes:
                handlers[envelope.type](envelope)
        t3 = time.process_time()
        decode += t2 - t
        handle += t3 - t2
    wall = time.perf_counter() - wall
    pids_after = _backend_pids(dbname)
    assert set(pids_after) == set(pids), "the pool opened a connection while measuring; warm up longer"
    pg = sum(cpu_seconds(pid) - pg_before[pid] for pid in pids)
    return Measured(data.events, data.turns, decode, handle, pg, wall)


def run(mode: str, args: argparse.Namespace, worker: Any = None) -> tuple[list[Measured], Traffic]:
    with tempfile.TemporaryDirectory(prefix="repotalk-bench-") as tmp, scratch_postgres() as pg_url:
        os.environ.update({
            "REPOTALK_ENV": "test",
            "REPOTALK_DATA_DIR": f"{tmp}/data",
            "DATABASE_URL": pg_url,
            "BROKER_URL": "memory://localhost/",
            "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
            "LOG_LEVEL": "WARNING",
            # One connection: the Postgres CPU read from /proc is that backend's.
            "DATABASE_POOL_SIZE": "1",
        })
        reset_process_state()
        from libs.common.schema import migrate

        migrate()
        reset_process_state()
        from libs.common import db

        assert db.ping()  # the pool's one connection, opened before anything is measured
        dbname = pg_url.rsplit("/", 1)[1]
        consume(mode, traffic(200, args.rate, args.duplicates, seed=1, prefix="WARM"), dbname, worker)
        runs = []
        for repeat in range(args.repeat):
            data = traffic(args.turns, args.rate, args.duplicates, args.seed + repeat, f"SM{repeat}-", args.window)
            runs.append(consume(mode, data, dbname, worker))
        reset_process_state()
        return runs, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1000, help="turns measured (after 200 warm-up turns)")
    parser.add_argument("--rate", type=float, default=200.0, help="turns per second the traffic models")
    parser.add_argument("--duplicates", type=float, default=0.02, help="fraction of events delivered twice")
    parser.add_argument("--window", type=float, default=50.0,
                        help="ms each publishing process gathers events before sending a batch (BROKER_BATCH_INTERVAL)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="measured runs (fresh turns each); the median is shown")
    parser.add_argument("--mode", choices=("per-event", "batch", "both"), default="both")
    args = parser.parse_args()

    modes = ("per-event", "batch") if args.mode == "both" else (args.mode,)
    for mode in modes:
        runs, data = run(mode, args)
        m = sorted(runs, key=lambda r: r.us_per_event(r.process_s))[len(runs) // 2]
        sizes = sorted(len(b) for b in data.batches)
        spread = ", ".join(f"{r.us_per_event(r.process_s):.0f}" for r in runs)
        print(f"\n{mode}: {m.turns} turns, {m.events} events in {len(data.batches)} batches "
              f"(median {sizes[len(sizes) // 2]}, max {sizes[-1]} events), {m.wall_s:.1f} s wall; "
              f"process us/event in the {len(runs)} runs: {spread} (the median is shown)")
        baseline = BASELINE_US_PER_EVENT[mode]
        rows = [
            Row("decode (from_json) us/event", m.us_per_event(m.decode_s), None, "us"),
            Row("handler us/event", m.us_per_event(m.handle_s), None, "us"),
            Row("analytics process us/event", m.us_per_event(m.process_s), baseline, "us"),
            Row("analytics process ms/turn", m.process_s * 1000 / m.turns, baseline * m.events / m.turns / 1000, "ms"),
            Row("postgres backend us/event", m.us_per_event(m.pg_s), BASELINE_PG_US_PER_EVENT[mode], "us"),
        ]
        print_table(f"bench/hotpath_analytics — {mode}", rows, "before")


if __name__ == "__main__":
    main()
