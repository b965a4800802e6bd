"""bench/celery_floor: what one event hop costs in CPU with our Celery settings, before any handler work —
publish (bus.publish) and consume (a `repotalk worker`-style process with a no-op handler) — beside a bare
Redis LPUSH/RPOP of the same message in the same run. It bounds what a turn of five hops can cost.

    .venv/bin/python bench/celery_floor.py [--events 3000]
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
app = bus.get_celery()
bus.register_service(app, Service.PROCESSOR, {EventType.MESSAGE_SENT: handle})
app.Worker(**bus.worker_options(get_settings(), Service.PROCESSOR), loglevel="WARNING").start()
"""


def _wait(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path.name}")
        time.sleep(0.02)


def consume_cpu_ms(pool: str, concurrency: int, events: int) -> float:
    """CPU ms per task of a worker draining ``events`` tasks already queued (start-up excluded)."""
    from libs.common import bus
    from libs.common.events import Envelope, MessageSent

    payload = MessageSent(user_id="u_bench", chunk_index=0, chunk_count=1, provider_sid="SM1", channel="twilio")
    with tempfile.TemporaryDirectory() as tmp:
        done, ready = Path(tmp) / "done", Path(tmp) / "ready"
        env = {**os.environ, "WORKER_POOL": pool, "WORKER_CONCURRENCY": str(concurrency)}
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(done), str(ready), str(events)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(ready, 60)
            before = cpu_seconds(proc.pid)
            # The message.sent event goes to analytics only; publish straight to the processor queue instead.
            app = bus.get_celery()
            for i in range(events):
                bus._send(app, "repotalk.processor.handle", "processor",
                          [Envelope.new(payload, f"SM{i}").to_json()])
            _wait(done, 120)
            return (cpu_seconds(proc.pid) - before) * 1000 / events
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
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
    rows = [
        Row("publish, CPU ms per event", publish_ms, bare_push, "ms", is_goal=False),
        Row("consume, threads pool, CPU ms/task", threads, bare_pop, "ms", is_goal=False),
        Row("consume, solo pool, CPU ms/task", solo, bare_pop, "ms", is_goal=False),
    ]
    print_table(f"bench/celery_floor — {args.events} events, Redis broker, no-op handler", rows, "bare redis")
    hop = publish_ms + min(threads, solo)
    print(f"\none hop ≈ {hop:.2f} ms CPU; a turn's five hops ≈ {5 * hop:.1f} ms before any handler work")


if __name__ == "__main__":
    main()
