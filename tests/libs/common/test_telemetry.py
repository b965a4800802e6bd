"""Tracing is off unless configured (no provider, no headers, nothing exported), and the JSON-lines
exporter writes a span with its ids, parent, service and attributes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from libs.common import telemetry


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
