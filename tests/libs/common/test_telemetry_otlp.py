"""The OTLP encoder of libs.common.telemetry_otlp writes what the SDK's encoder serializes (decoded with the official
opentelemetry-proto classes), its exporter and batch processor deliver it over OTLP/HTTP as the SDK's would, and the
leaner SQLAlchemy engine tracer makes the same spans as the stock one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from libs.common import telemetry, telemetry_otlp
from libs.common.telemetry_spans import LeanTracerProvider


def _provider(service: str, schema_url: str = "", provider_type: type[TracerProvider] = TracerProvider
              ) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = provider_type(resource=Resource.create({"service.name": service, "repotalk.process": "worker"},
                                                      schema_url=schema_url or None))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _all_kinds_of_spans() -> list[ReadableSpan]:
    """Spans of two resources and several scopes, interleaved, with every kind of value the SDK accepts."""
    gateway, gateway_spans = _provider("gateway", schema_url="https://opentelemetry.io/schemas/1.21.0")
    processor, processor_spans = _provider("processor")
    ours = gateway.get_tracer("repotalk")
    instrumentation = gateway.get_tracer("opentelemetry.instrumentation.sqlalchemy", "0.66b1",
                                         schema_url="https://opentelemetry.io/schemas/1.11.0",
                                         attributes={"scope.attr": "x"})
    same_scope_again = gateway.get_tracer("repotalk")  # another tracer of an equal scope: one ScopeSpans
    other = processor.get_tracer("repotalk", "1.0")
    remote = SpanContext(0xA1B2C3D4E5F60718293A4B5C6D7E8F90, 0x1122334455667788, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "v1")]))
    attributes: dict[str, Any] = {
        "text": "plain", "empty": "", "unicode": "héllo ✓", "long": "x" * 300,
        "yes": True, "no": False, "zero": 0, "small": 7, "negative": -42, "big": 2**62, "huge": 2**70,
        "float": 3.25, "float.zero": 0.0, "float.negative": -1e-300,
        "strings": ("a", "", "b"), "ints": (1, -2, 3), "floats": (0.5, 2.0), "bools": (True, False), "none": (),
    }
    with ours.start_as_current_span("POST /webhooks/twilio", context=set_span_in_context(NonRecordingSpan(remote)),
                                    kind=SpanKind.SERVER, attributes=attributes) as server:
        with instrumentation.start_as_current_span("SELECT repotalk", kind=SpanKind.CLIENT,
                                                   attributes={"db.statement": "SELECT 1\nFROM t" * 40}):
            pass
        with other.start_as_current_span("run/repotalk.processor.handle", kind=SpanKind.CONSUMER,
                                         links=[Link(remote, {"link.attr": 1}),
                                                Link(server.get_span_context())]) as consumer:
            consumer.add_event("retry", {"attempt": 2, "reason": "timeout"})
            consumer.add_event("empty")
            consumer.set_status(Status(StatusCode.ERROR, "refused: code 21610"))
        with same_scope_again.start_as_current_span("apply_async/repotalk.processor.handle", kind=SpanKind.PRODUCER):
            pass
        with ours.start_as_current_span("", kind=SpanKind.INTERNAL) as ok:
            ok.set_status(Status(StatusCode.OK))
    with other.start_as_current_span("code_search.search"):
        pass
    spans = list(gateway_spans.get_finished_spans()) + list(processor_spans.get_finished_spans())
    spans.sort(key=lambda s: s.end_time or 0)  # interleaves the two resources
    return spans


def test_the_encoder_writes_what_the_sdk_encoder_serializes() -> None:
    spans = _all_kinds_of_spans()
    ours = telemetry_otlp.encode_spans(spans)
    sdk = sdk_encode_spans(spans)
    decoded = ExportTraceServiceRequest.FromString(ours)
    assert decoded == sdk
    assert ours == sdk.SerializeToString()  # same fields in the same order: byte for byte
    assert len(decoded.resource_spans) == 2
    names = [span.name for rs in decoded.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert sorted(names) == sorted(span.name for span in spans)
    (server,) = [span for rs in decoded.resource_spans for ss in rs.scope_spans for span in ss.spans
                 if span.name == "POST /webhooks/twilio"]
    attributes = {kv.key: kv.value for kv in server.attributes}
    assert "huge" not in attributes  # beyond int64: left out, as the SDK's encoder does
    assert attributes["negative"].int_value == -42 and attributes["unicode"].string_value == "héllo ✓"


def test_spans_captured_as_they_end_assemble_into_the_same_request() -> None:
    spans = _all_kinds_of_spans()
    captured = [telemetry_otlp.capture(span) for span in spans]
    encoded = telemetry_otlp.encode_captured(captured)
    assert ExportTraceServiceRequest.FromString(telemetry_otlp.assemble(encoded)) == sdk_encode_spans(spans)
    assert telemetry_otlp.assemble([]) == sdk_encode_spans([]).SerializeToString() == b""


def test_attributes_encoded_again_from_the_cache_are_the_same_bytes() -> None:
    """The second time round, every string attribute (short, long, repeated) comes from the cache of encoded pairs;
    a key with more values than the cache keeps is encoded each time."""
    spans = _all_kinds_of_spans()
    first = telemetry_otlp.encode_spans(spans)
    assert telemetry_otlp.encode_spans(spans) == first == sdk_encode_spans(spans).SerializeToString()
    provider, memory = _provider("gateway")
    tracer = provider.get_tracer("repotalk")
    for i in range(telemetry_otlp.PAIR_VALUES_PER_KEY + 10):
        tracer.start_span("run/task", attributes={"repotalk.event.id": f"event-{i}", "long": f"{i}" + "x" * 200}).end()
    many = list(memory.get_finished_spans())
    assert telemetry_otlp.encode_spans(many) == telemetry_otlp.encode_spans(many) == sdk_encode_spans(
        many).SerializeToString()
    assert telemetry_otlp._pair_values["repotalk.event.id"] == telemetry_otlp.PAIR_VALUES_PER_KEY


class _Collector:
    """A local OTLP/HTTP endpoint that keeps each request's path, headers and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[Any]:
        return [span for _, _, body in self.requests
                for rs in ExportTraceServiceRequest.FromString(body).resource_spans
                for ss in rs.scope_spans for span in ss.spans]


@pytest.fixture
def collector() -> Iterator[_Collector]:
    sink = _Collector()
    yield sink
    sink.server.shutdown()


def test_the_exporter_posts_otlp_protobuf_where_the_otel_variables_say(
    collector: _Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=repotalk")
    spans = _all_kinds_of_spans()
    exporter = telemetry_otlp.FastOTLPSpanExporter()
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    ((path, headers, body),) = collector.requests
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf" and headers["x-tenant"] == "repotalk"
    assert ExportTraceServiceRequest.FromString(body) == sdk_encode_spans(spans)


@pytest.mark.parametrize("provider_type", [TracerProvider, LeanTracerProvider])
def test_the_capturing_batch_processor_exports_every_sampled_span_on_flush(
    collector: _Collector, provider_type: type[TracerProvider]
) -> None:
    provider = provider_type(resource=Resource.create({"service.name": "processor"}))
    processor = telemetry_otlp.CapturingBatchSpanProcessor(
        telemetry_otlp.FastOTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("repotalk")
    with tracer.start_as_current_span("run/task", kind=SpanKind.CONSUMER) as parent:
        for i in range(3):
            with tracer.start_as_current_span("child", attributes={"i": i}):
                pass
    unsampled = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    tracer.start_span("not sampled", context=set_span_in_context(NonRecordingSpan(unsampled))).end()
    assert collector.requests == []  # batched: nothing sent before the schedule or a flush
    assert provider.force_flush()
    spans = collector.spans()
    assert sorted(s.name for s in spans) == ["child", "child", "child", "run/task"]
    assert {s.parent_span_id for s in spans if s.name == "child"} == {
        parent.get_span_context().span_id.to_bytes(8, "big")}
    provider.shutdown()


CHILD = r'''
from libs.common import telemetry
assert telemetry.setup("processor")
with telemetry.span("turn"):
    with telemetry.publish_span("repotalk.code_search.handle", "code_search", "search.requested", "e1", "SM1"):
        pass
'''


def test_a_process_exporting_otlp_sends_its_spans_when_it_exits(collector: _Collector) -> None:
    """setup() with only OTEL_EXPORTER_OTLP_ENDPOINT set: the spans of a turn reach the collector, flushed at exit
    (a child process: tracing installs process-wide hooks)."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    env.pop("REPOTALK_TRACE_FILE", None)
    env.pop("OTEL_TRACES_EXPORTER", None)
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=root, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    by_name = {span.name: span for span in collector.spans()}
    assert set(by_name) == {"turn", "apply_async/repotalk.code_search.handle"}
    producer = by_name["apply_async/repotalk.code_search.handle"]
    assert producer.parent_span_id == by_name["turn"].span_id and producer.trace_id == by_name["turn"].trace_id
    assert producer.kind == producer.SPAN_KIND_PRODUCER


STATEMENTS = [
    "SELECT 1 AS one",
    "  SELECT\n  2 AS two",
    "/* a comment */ SELECT 3",
    "WITH t AS (SELECT 4 AS x) SELECT x FROM t",
    "BEGIN",
    "COMMIT",
]


@pytest.mark.parametrize("provider_type", [TracerProvider, LeanTracerProvider])
def test_the_engine_tracer_makes_the_stock_tracers_spans(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, provider_type: type[TracerProvider]
) -> None:
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import get_meter
    from sqlalchemy import create_engine, text

    provider, memory = _provider("processor", provider_type=provider_type)
    tracer = provider.get_tracer("repotalk")
    monkeypatch.setattr(telemetry, "_provider", provider)
    monkeypatch.setattr(telemetry, "_tracer", tracer)
    ours = telemetry.trace_engine(create_engine(pg_url))
    stock = create_engine(pg_url)
    EngineTracer(tracer, stock, get_meter("test").create_up_down_counter("db.client.connections.usage"))

    def spans_of(engine: Any) -> list[tuple[str, SpanKind, dict[str, Any]]]:
        memory.clear()
        with tracer.start_as_current_span("turn"), engine.connect() as conn:
            for statement in STATEMENTS:
                conn.exec_driver_sql(statement)
            conn.execute(text("SELECT :x AS x"), {"x": 5})
        conn_spans = [s for s in memory.get_finished_spans() if s.name != "turn"]
        turn = next(s for s in memory.get_finished_spans() if s.name == "turn")
        assert all(s.parent is not None and s.parent.span_id == turn.context.span_id for s in conn_spans)
        return [(s.name, s.kind, dict(s.attributes or {})) for s in conn_spans]

    try:
        expected = spans_of(stock)
        got = spans_of(ours)
        again = spans_of(ours)  # each statement's name and attributes from the engine's cache
    finally:
        ours.dispose()
        stock.dispose()
    assert len(expected) == len(STATEMENTS) + 1
    assert got == expected and again == expected
    assert [list(attributes) for _, _, attributes in got] == [list(attributes) for _, _, attributes in expected]
    assert got[0][0].startswith("SELECT ") and got[2][0].startswith("SELECT ") and got[3][0].startswith("WITH ")
