"""Tracing is off unless configured (no provider, no headers, nothing exported), and the JSON-lines
exporter writes a span with its ids, parent, service and attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from libs.common import telemetry
from tests.conftest import REDIS_URL


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"REPOTALK_TRACE_FILE": "/tmp/spans.jsonl"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_with_an_exporter(env: dict[str, str], on: bool) -> None:
    assert telemetry.exporter_configured(env) is on


def test_off_installs_nothing_and_adds_no_headers(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "REPOTALK_TRACE_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert telemetry.setup("processor") is False
    assert not telemetry.enabled()
    with telemetry.publish_span("repotalk.processor.handle", "processor", "message.received", "e1", "SM1") as headers:
        assert headers is None
    with telemetry.span("anything") as current:
        assert current is None
    assert telemetry.traceparent() is None
    with telemetry.remote_parent("00-" + "a" * 32 + "-" + "b" * 16 + "-01"):
        assert telemetry.current_ids() is None


def test_json_lines_exporter_writes_one_line_per_span(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "code_search"}))
    provider.add_span_processor(SimpleSpanProcessor(telemetry.JsonLinesSpanExporter(str(path))))  # type: ignore[arg-type]
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("run/task", kind=SpanKind.CONSUMER) as parent, \
            tracer.start_as_current_span("code_search.search", attributes={"repotalk.search.hits": 3}):
        pass
    provider.shutdown()
    child, outer = [json.loads(line) for line in path.read_text().splitlines()]
    assert child["name"] == "code_search.search" and child["service"] == "code_search"
    assert child["parent_span_id"] == outer["span_id"] == f"{parent.get_span_context().span_id:016x}"
    assert child["trace_id"] == outer["trace_id"] and outer["parent_span_id"] is None
    assert child["attributes"] == {"repotalk.search.hits": 3} and outer["kind"] == "CONSUMER"


def test_the_root_sampler_keeps_requests_and_drops_stray_calls_and_batches() -> None:
    from opentelemetry.sdk.trace.sampling import Decision

    sampler = telemetry._root_sampler(1.0)
    decide = lambda kind: sampler.should_sample(None, 1234, "x", kind).decision  # noqa: E731
    assert decide(SpanKind.SERVER) is Decision.RECORD_AND_SAMPLE
    assert decide(SpanKind.INTERNAL) is Decision.RECORD_AND_SAMPLE
    assert decide(SpanKind.CONSUMER) is Decision.DROP  # a task without context: an analytics batch
    assert decide(SpanKind.CLIENT) is Decision.DROP  # Celery polling Redis, the outbox sweep's SELECT
    assert decide(SpanKind.PRODUCER) is Decision.DROP
    assert telemetry._root_sampler(0.0).should_sample(None, 1234, "x", SpanKind.SERVER).decision is Decision.DROP


def test_at_most_so_many_turns_a_second_are_traced_and_every_one_below_that() -> None:
    from opentelemetry.sdk.trace.sampling import Decision

    now = [100.0]
    sampler = telemetry._root_sampler(1.0, max_per_second=3, clock=lambda: now[0])
    traced = lambda: sampler.should_sample(None, 1234, "x", SpanKind.SERVER).decision is Decision.RECORD_AND_SAMPLE  # noqa: E731
    assert [traced() for _ in range(5)] == [True, True, True, False, False]  # a burst: three, then none
    now[0] += 1 / 3
    assert [traced(), traced()] == [True, False]  # a third of a second later, one more
    now[0] += 60
    assert sum(traced() for _ in range(10)) == 3  # a quiet minute saves up no more than a second's worth
    for _ in range(30):  # a steady three a second, below the cap: every one traced
        now[0] += 1 / 3
        assert traced()
    # The cap applies to what the ratio keeps; and without a cap, every turn the ratio keeps is traced.
    assert not telemetry._root_sampler(0.0, max_per_second=3).should_sample(None, 1, "x", SpanKind.SERVER).decision \
        .is_sampled()
    uncapped = telemetry._root_sampler(1.0, max_per_second=0)
    assert all(uncapped.should_sample(None, 1, "x", SpanKind.SERVER).decision.is_sampled() for _ in range(1000))


CHILD = r'''
import json, sys
from types import SimpleNamespace
import redis
from sqlalchemy import create_engine, text
from libs.common import telemetry

assert telemetry.setup("processor")
client = telemetry.instrument_redis(redis.Redis.from_url(sys.argv[2]))
broker = redis.Redis.from_url(sys.argv[2])  # a connection of kombu's, say: not instrumented
engine = telemetry.trace_engine(create_engine("sqlite://"))
asked = []
sampler = telemetry._provider.sampler
decide = sampler.should_sample
sampler.should_sample = lambda *args, **kwargs: (asked.append(args[2]), decide(*args, **kwargs))[1]
client.ping()  # outside a turn: no span, and no trip through the instrumentation (the sampler is not asked)
with engine.connect() as conn:
    conn.execute(text("SELECT 1"))
assert asked == [], asked
with telemetry.span("turn"):
    client.ping()
    broker.ping()
    with telemetry.suppressed():  # a span of ours that records the call already (a Twilio send)
        client.ping()
    with engine.connect() as conn:
        conn.execute(text("SELECT 2"))
parent = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
with telemetry.consume_span("repotalk.processor.handle", "processor", SimpleNamespace(id="t1", retries=1),
                            "search.completed", "e1", "SM1") as none:
    assert none is None  # a task without trace context starts no trace
with telemetry.consume_span("repotalk.processor.handle", "processor",
                            SimpleNamespace(id="t2", retries=1, traceparent=parent),
                            "search.completed", "e2", "SM1") as current:
    assert current is not None and current.is_recording()
    client.ping()
unsampled = "00-" + "c" * 32 + "-" + "d" * 16 + "-00"
with telemetry.consume_span("repotalk.processor.handle", "processor",
                            SimpleNamespace(id="t3", retries=0, traceparent=unsampled),
                            "message.received", "e3", "SM2") as none:
    assert none is None  # a turn the gateway did not sample: no span here either...
    with telemetry.span("inner"):  # ...nor in the handler...
        client.ping()
    with telemetry.publish_span("repotalk.code_search.handle", "code_search", "search.requested", "e4",
                                "SM2") as headers:
        assert headers == {"traceparent": unsampled}, headers  # ...and the decision travels on
from opentelemetry.propagate import get_global_textmap
assert type(get_global_textmap()).__name__ == "TraceContextTextMapPropagator"  # no baggage to look for
telemetry.shutdown()
'''


def test_redis_sql_and_tasks_are_traced_inside_a_turn_only(tmp_path: Path) -> None:
    """A child process (tracing installs process-wide hooks): Redis commands and SQL statements become spans
    inside a recording span and skip the instrumentation outside one; a task continues its producer's trace."""
    import os
    import subprocess
    import sys

    spans_path = tmp_path / "spans.jsonl"
    env = {**os.environ, "REPOTALK_TRACE_FILE": str(spans_path)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    root = Path(__file__).resolve().parents[3]
    # PING only: no key of anyone else's is touched.
    result = subprocess.run([sys.executable, "-c", CHILD, str(spans_path), REDIS_URL], env=env, cwd=root,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in spans_path.read_text().splitlines()]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in spans:
        by_name.setdefault(record["name"], []).append(record)
    turn = by_name["turn"][0]
    pings = by_name["PING"]
    assert len(pings) == 2, [s["name"] for s in spans]
    assert pings[0]["parent_span_id"] == turn["span_id"] and pings[0]["kind"] == "CLIENT"
    sql = [s for s in spans if s["name"].startswith("SELECT")]
    assert len(sql) == 1 and sql[0]["parent_span_id"] == turn["span_id"]
    (consumer,) = by_name["run/repotalk.processor.handle"]
    assert consumer["kind"] == "CONSUMER" and consumer["trace_id"] == "a" * 32
    assert consumer["parent_span_id"] == "b" * 16
    assert consumer["attributes"]["repotalk.event.id"] == "e2" and consumer["attributes"]["repotalk.delivery"] == 2
    assert pings[1]["parent_span_id"] == consumer["span_id"]
    assert "inner" not in by_name and all(s["trace_id"] != "c" * 32 for s in spans)
