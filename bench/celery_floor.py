"""bench/celery_floor: what one event hop costs in CPU with our Celery settings, before any handler work —
publish (bus.publish) and consume (a `repotalk worker`-style process with a no-op handler) — beside a bare
Redis LPUSH/RPOP of the same message in the same run. It bounds what a turn of five hops can cost.

It also consumes the same events carried several to a task (the batched task analytics takes), arriving
one task at a time as on a turn's path: what a hop would cost per event if its events travelled in batches.

    .venv/bin/python bench/celery_floor.py [--events 3000] [--batches 4,8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import REDIS_URL, Row, cpu_seconds, print_table, scratch_redis_prefix  # noqa: E402

WORKER = r"""
import os, sys
from pathlib import Path
from celery.signals import worker_ready
from libs.common import bus
from libs.common.events import EventType, Service
from libs.common.settings import get_settings
done_file, ready_file, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
seen = [0]
def handle(envelope):
    seen[0] += 1
    if seen[0] == total:
        done_file.write_text("done")
@worker_ready.connect(weak=False)
def ready(**_):
    ready_file.write_text(str(os.getpid()))
service = Service(sys.argv[4])
app = bus.get_celery()
bus.register_service(app, service, {EventType.MESSAGE_SENT: handle})
app.Worker(**bus.worker_options(get_settings(), service), loglevel="WARNING").start()
"""


def _wait(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path.name}")
        time.sleep(0.02)


def consume_cpu_ms(pool: str, concurrency: int, events: int, batch: int = 0) -> float:
    """CPU ms per event of a worker taking ``events`` events (start-up excluded): with ``batch`` 0, one task
    each, already queued; otherwise ``batch`` to a task, sent one task at a time a little apart, as a turn's
    hops arrive (a queued backlog would let the worker's poll loop amortise its wake-ups)."""
    from libs.common import bus
    from libs.common.events import Envelope, MessageSent, Service, batch_task_name, task_name

    payload = MessageSent(user_id="u_bench", chunk_index=0, chunk_count=1, provider_sid="SM1", channel="twilio")
    # message.sent goes to analytics only: the plain tasks go straight to the processor's queue instead, the
    # batches to analytics' batched task (the only one that takes lists).
    service = Service.ANALYTICS if batch else Service.PROCESSOR
    with tempfile.TemporaryDirectory() as tmp:
        done, ready = Path(tmp) / "done", Path(tmp) / "ready"
        env = {**os.environ, "WORKER_POOL": pool, "WORKER_CONCURRENCY": str(concurrency)}
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(done), str(ready), str(events), service.value],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(ready, 60)
            app = bus.get_celery()
            bodies = [Envelope.new(payload, f"SM{i}").to_json() for i in range(events)]
            before = cpu_seconds(proc.pid)
            if not batch:
                for body in bodies:
                    bus._send(app, task_name(service), service.value, [body])
            else:
                for start in range(0, events, batch):
                    bus._send(app, batch_task_name(service), service.value, [bodies[start : start + batch]])
                    time.sleep(0.002 * batch)
            _wait(done, 300)
            return (cpu_seconds(proc.pid) - before) * 1000 / events
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batches", default="4,8", help="events a task for the batched rows (comma-separated)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    with scratch_redis_prefix() as prefix:
        os.environ.update(BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=prefix, REPOTALK_ENV="test", LOG_LEVEL="WARNING")
        import redis

        from libs.common import bus
        from libs.common.events import Envelope, EventType, MessageReceived

        payload = MessageReceived(message_sid="SM1", user_id="u_bench", body="where is x?",
                                  received_at=datetime.now(UTC))
        envelopes = [Envelope.new(payload, f"SM{i}") for i in range(args.events)]
        for envelope in envelopes[:200]:  # warm the connection pool and caches
            bus.publish(envelope)
        start = time.process_time()
        for envelope in envelopes:
            bus.publish(envelope)
        bus.flush_batches()
        # message.received goes to the processor (a task) and analytics (a batched copy).
        publish_ms = (time.process_time() - start) * 1000 / args.events
        assert envelopes[0].type is EventType.MESSAGE_RECEIVED
        # What was just published must not be left for the consume runs below to drain as well (it doubled
        # the threads figure until it was purged here).
        with bus.get_celery().connection_for_write() as conn:
            for queue in ("processor", "analytics"):
                conn.default_channel.queue_purge(queue)

        client = redis.Redis.from_url(REDIS_URL)
        key = f"{prefix}bare"
        body = envelopes[0].model_dump_json().encode()
        start = time.process_time()
        for _ in range(args.events):
            client.lpush(key, body)
        bare_push = (time.process_time() - start) * 1000 / args.events
        start = time.process_time()
        for _ in range(args.events):
            client.rpop(key)
        bare_pop = (time.process_time() - start) * 1000 / args.events
        client.close()

        threads = consume_cpu_ms("threads", 4, args.events)
        solo = consume_cpu_ms("solo", 1, args.events)
        trickled = {b: consume_cpu_ms("threads", 4, args.events, b) for b in [1, *batches]}
    rows = [
        Row("publish, CPU ms per event", publish_ms, bare_push, "ms", is_goal=False),
        Row("consume, threads pool, CPU ms/task", threads, bare_pop, "ms", is_goal=False),
        Row("consume, solo pool, CPU ms/task", solo, bare_pop, "ms", is_goal=False),
    ]
    print_table(f"bench/celery_floor — {args.events} events, Redis broker, no-op handler", rows, "bare redis")
    hop = publish_ms + min(threads, solo)
    print(f"\none hop ≈ {hop:.2f} ms CPU; a turn's five hops ≈ {5 * hop:.1f} ms before any handler work")
    print("\nthe same events arriving one task at a time (threads pool), several to a task:")
    print(f"{'events a task':<16} {'CPU ms/event':>12} {'vs 1 a task':>12}")
    for b in [1, *batches]:
        print(f"{b:<16} {trickled[b]:>12.3f} {trickled[b] / trickled[1]:>11.2f}x")


if __name__ == "__main__":
    main()
