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


_W3C_CONTEXTS = [
    (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x01, None),
    (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x00, None),
    (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x03, None),
    (1, 1, 0x01, [("vendor", "opaque"), ("other", "x")]),
    (0, 0, 0x00, None),
]
_TRACEPARENTS = [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-f1",  # flags this SDK does not know, kept
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case: not W3C
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\t",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
    "00-0af7651916cd43dd8448eb211c8031_c-b7ad6b7169203331-01",
    "",
]


@pytest.fixture
def w3c(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The W3C propagator as setup installs it, for the duration of a test."""
    from opentelemetry.propagate import get_global_textmap, set_global_textmap
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    previous = get_global_textmap()
    propagator = TraceContextTextMapPropagator()
    monkeypatch.setattr(telemetry, "_w3c", propagator)
    set_global_textmap(propagator)
    yield propagator
    set_global_textmap(previous)


@pytest.mark.parametrize("other_propagator", [False, True])
def test_headers_are_written_and_read_as_the_w3c_propagator_does(w3c: Any, other_propagator: bool) -> None:
    """The hops' own carrier code (every turn passes it a few times per hop) gives what inject and extract give,
    for well-formed, malformed and unusual values, and defers to them under any other propagator."""
    from opentelemetry import trace
    from opentelemetry.propagate import extract, inject, set_global_textmap
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    if other_propagator:
        set_global_textmap(CompositePropagator([w3c]))
    for trace_id, span_id, flags, state in _W3C_CONTEXTS:
        span = NonRecordingSpan(SpanContext(trace_id, span_id, True, TraceFlags(flags),
                                            TraceState(state) if state else None))
        expected: dict[str, str] = {}
        inject(expected, context=trace.set_span_in_context(span))
        assert telemetry._carrier(span) == expected
    for value in _TRACEPARENTS:
        for carrier in ({"traceparent": value}, {"traceparent": value, "tracestate": "vendor=opaque"}):
            ours, theirs = telemetry._extract(carrier), extract(carrier)
            assert trace.get_current_span(ours).get_span_context() == trace.get_current_span(theirs).get_span_context()
            assert set(ours) == set(theirs), value


def test_a_producer_span_writes_its_own_context_and_records_a_failed_send(
        w3c: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(telemetry, "_provider", provider)
    monkeypatch.setattr(telemetry, "_tracer", provider.get_tracer("test"))
    with telemetry._tracer.start_as_current_span("turn") as turn:
        with telemetry.publish_span("repotalk.processor.handle", "processor", "message.received", "e1",
                                    "SM1") as headers:
            assert trace.get_current_span() is turn  # the producer span is not made current
        with pytest.raises(ConnectionError), telemetry.publish_span(
                "repotalk.processor.handle", "processor", "message.received", "e2", "SM1"):
            raise ConnectionError("broker down")
    sent, failed, _ = memory.get_finished_spans()
    ctx = sent.context
    assert headers == {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
    assert sent.parent.span_id == turn.get_span_context().span_id
    assert sent.kind is SpanKind.PRODUCER and sent.attributes["repotalk.event.id"] == "e1"
    assert failed.status.status_code.name == "ERROR" and failed.events[0].name == "exception"
