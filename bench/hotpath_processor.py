"""bench/hotpath_processor: CPU per event of the processor's question path, measured in this process by
calling the handlers directly on a scratch Postgres database (no broker: the handlers return what a
worker would publish).

    message.received (a question)  -> search.requested     services.processor.inbound.handle
    ai.response                    -> reply.ready          services.processor.answers.handle

Two kinds of turn: a user's first message (a session starts; every message of bench/webhook is one)
and a returning user's question (an active session with a full history to send along). For each
handler: CPU microseconds per event (process time, best of 3 runs) and database round trips per event
("DB trips": statements, BEGIN/COMMIT and connection pings as the driver sends them).

Printed beside the implementation of an earlier commit, measured in the same run: its
services/processor is read from git (`git archive`, nothing in the working tree changes) into a
temporary directory and measured by a child process against this tree's libs/. And beside the figures
that implementation recorded here when the hot path was reworked.

    .venv/bin/python bench/hotpath_processor.py [--turns 400] [--baseline-ref b83adec] [--no-baseline]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# A child measuring an earlier implementation puts that tree's services/ in front of the working tree's.
if os.environ.get("HOTPATH_PROCESSOR_SOURCE"):
    sys.path.insert(0, os.environ["HOTPATH_PROCESSOR_SOURCE"])

from bench.common import Row, print_table, scratch_postgres  # noqa: E402

# The implementation before the rework (ORM unit of work, one pooled transaction per event), and what
# it measured on this machine (2 cores, shared and busy: load average about 5 at the time) with
# `bench/hotpath_processor.py --turns 400`, in the same run as the rework's figures of 899.5 / 578.7 us
# (first message) and 1,402.1 / 628.7 us (returning user).
BASELINE_REF = "b83adec"
RECORDED_BASELINE: dict[str, float] = {
    "received (first) CPU us": 3587.7,
    "received (first) DB trips": 9.0,
    "ai.response (first) CPU us": 2389.8,
    "ai.response (first) DB trips": 6.0,
    "received (returning) CPU us": 4023.1,
    "received (returning) DB trips": 9.0,
    "ai.response (returning) CPU us": 2396.3,
    "ai.response (returning) DB trips": 6.0,
}

TARGET_US = 1500.0  # CPU per event on the question path
SCENARIOS = ("first", "returning")
HANDLERS = ("received", "ai.response")  # message.received, ai.response
HISTORY_EXCHANGES = 6
QUESTION = "how do sessions expire when a user goes quiet for a while?"
ANSWER = "Sessions end after SESSION_IDLE_MINUTES of silence (*services/processor/sessions.py:92*).\n" * 8


def _key(scenario: str, handler: str, what: str) -> str:
    return f"{handler} ({scenario}) {what}"


@contextmanager
def _round_trips() -> Iterator[list[int]]:
    """Count what the driver sends: statements (a pool's pre-ping is one) and BEGIN/COMMIT/ROLLBACK."""
    import psycopg
    from psycopg import _connection_base

    count = [0]
    execute = psycopg.Cursor.execute
    command = getattr(_connection_base.BaseConnection, "_exec_command", None)

    def counted_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return execute(self, *args, **kwargs)

    def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        assert command is not None
        return command(self, *args, **kwargs)

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    if command is not None:
        _connection_base.BaseConnection._exec_command = counted_command  # type: ignore[method-assign]
    try:
        yield count
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        if command is not None:
            _connection_base.BaseConnection._exec_command = command  # type: ignore[method-assign]


def measure(turns: int) -> dict[str, float]:
    """CPU us and round trips per event for each handler and scenario, on a fresh Postgres database."""
    with tempfile.TemporaryDirectory(prefix="repotalk-hotpath-") as tmp, scratch_postgres() as pg_url:
        os.environ.update(
            {
                "REPOTALK_ENV": "test",
                "REPOTALK_DATA_DIR": f"{tmp}/data",
                "DATABASE_URL": pg_url,
                "BROKER_URL": "memory://localhost/",
                "SECRET_KEY": "bench-secret-key-0123456789abcdef0123456789",
                "LOG_LEVEL": "WARNING",
                "HISTORY_TURNS": str(HISTORY_EXCHANGES),
            }
        )
        from libs.common.events import AIResponse, Envelope, MessageReceived
        from libs.common.lifecycle import reset_process_state
        from libs.common.schema import migrate
        from services.processor import answers, inbound

        reset_process_state()
        migrate()
        # The benchmarked stack runs with LOG_LEVEL=WARNING: the handlers' INFO lines cost a level check.
        logging.getLogger().setLevel(logging.WARNING)
        handlers: dict[str, Callable[[Envelope], list[Envelope]]] = {
            "received": inbound.handle,
            "ai.response": answers.handle,
        }
        sequence = [0]

        def turn_events(user: str) -> tuple[Envelope, Envelope]:
            sequence[0] += 1
            sid = f"SM{sequence[0]:032d}"
            received = MessageReceived(message_sid=sid, user_id=user, body=QUESTION, received_at=datetime.now(UTC))
            response = AIResponse(
                session_id="", user_id=user, question="", answer=ANSWER, answerer="offline",
                citations=["repotalk/services/processor/sessions.py:92", "repotalk/libs/common/db.py:7"],
            )
            return Envelope.new(received, sid, source="gateway"), Envelope.new(response, sid, source="ai_engine")

        def run(users: list[str], counter: list[int] | None = None) -> tuple[dict[str, float], dict[str, float]]:
            """One question and its answer per user: CPU us and round trips per event of each handler."""
            cpu = dict.fromkeys(HANDLERS, 0.0)
            trips = dict.fromkeys(HANDLERS, 0.0)
            published: list[str] = []
            for user in users:
                for name, envelope in zip(HANDLERS, turn_events(user), strict=True):
                    before = counter[0] if counter else 0
                    start = time.process_time()
                    out = handlers[name](envelope)
                    cpu[name] += time.process_time() - start
                    trips[name] += (counter[0] if counter else 0) - before
                    published.extend(event.type.value for event in out)
            assert published == ["search.requested", "reply.ready"] * len(users), sorted(set(published))
            return {k: v * 1e6 / len(users) for k, v in cpu.items()}, {k: v / len(users) for k, v in trips.items()}

        def users(tag: str, count: int) -> list[str]:
            return [f"u_{tag}{i:030d}" for i in range(count)]

        returning = users("back", turns)
        for _ in range(HISTORY_EXCHANGES):
            run(returning)  # a full history, and warm caches and connections
        results: dict[str, float] = {}
        for scenario in SCENARIOS:
            cpu_runs = []
            for attempt in range(3):  # best of three: the machine is shared and noisy
                group = returning if scenario == "returning" else users(f"new{attempt}x", turns)
                cpu_runs.append(run(group)[0])
            with _round_trips() as counter:
                group = returning[:50] if scenario == "returning" else users("newcount", 50)
                trips = run(group, counter)[1]
            for handler in HANDLERS:
                results[_key(scenario, handler, "CPU us")] = min(r[handler] for r in cpu_runs)
                results[_key(scenario, handler, "DB trips")] = trips[handler]
        reset_process_state()
        return results


def measure_ref(ref: str, turns: int) -> dict[str, float] | None:
    """The same measurement on services/processor as it was at ``ref``."""
    with tempfile.TemporaryDirectory(prefix="repotalk-hotpath-ref-") as tree:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "services/__init__.py", "services/processor"],
            capture_output=True,
        )
        if archive.returncode != 0:
            print(f"(cannot read {ref} from git: {archive.stderr.decode().strip()})")
            return None
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        child = subprocess.run(
            [sys.executable, __file__, "--turns", str(turns), "--json", "--no-baseline"],
            env={**os.environ, "HOTPATH_PROCESSOR_SOURCE": tree},
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            print(f"(measuring {ref} failed: {child.stderr.strip().splitlines()[-1:]})")
            return None
        return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def _rows(measured: dict[str, float], baseline: dict[str, float] | None) -> list[Row]:
    rows = []
    for scenario in SCENARIOS:
        for handler in HANDLERS:
            for what in ("CPU us", "DB trips"):
                key = _key(scenario, handler, what)
                rows.append(Row(key, measured[key], baseline.get(key) if baseline else None, what))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=400, help="question + answer pairs per measured run")
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git commit of the implementation to compare")
    parser.add_argument("--no-baseline", action="store_true", help="measure the working tree only")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    measured = measure(args.turns)
    if args.json:
        print(json.dumps(measured))
        return
    live = None if args.no_baseline else measure_ref(args.baseline_ref, args.turns)

    import services.processor

    print(f"\nprocessor hot path: {Path(services.processor.__file__).parent}, {args.turns} turns per run")
    if live is not None:
        print_table(f"per event, vs {args.baseline_ref} measured in this run", _rows(measured, live), "before")
    if RECORDED_BASELINE:
        print_table(f"per event, vs {BASELINE_REF} as recorded", _rows(measured, RECORDED_BASELINE), "recorded")
    if live is None and not RECORDED_BASELINE:
        print_table("per event", _rows(measured, None), "before")
    target = [
        Row(f"question path, {scenario} (mean)",
            sum(measured[_key(scenario, h, "CPU us")] for h in HANDLERS) / len(HANDLERS), TARGET_US, "us")
        for scenario in SCENARIOS
    ]
    print_table("CPU us per event on the question path vs the target", target, "target")


if __name__ == "__main__":
    main()
