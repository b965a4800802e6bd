"""The lean tracer provider makes the spans the SDK's own provider makes (same ids, parents, flags, attributes with
the same cleaning and limits, events, links, status, exceptions, scope and resource), the short way where it applies,
and the SDK's way everywhere else; and the inbound webhook's server span carries the ASGI instrumentation's
request attributes."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import collect_request_attributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
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
from libs.common.telemetry_spans import LeanSpan, LeanTracer, LeanTracerProvider


class CountingIds(IdGenerator):
    """Ids from a counter: two providers that make the same spans in the same order give them the same ids."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        return 0xABC000 + next(self._next)

    def is_trace_id_random(self) -> bool:
        return True


LIMITS = dict(max_span_attributes=5, max_span_attribute_length=12, max_events=3)
REMOTE = SpanContext(0xA1B2C3D4E5F60718293A4B5C6D7E8F90, 0x1122334455667788, is_remote=True,
                     trace_flags=TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
                     trace_state=TraceState([("vendor", "v1")]))
UNSAMPLED = SpanContext(0xA1B2C3D4E5F60718293A4B5C6D7E8F91, 0x1122334455667789, is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.DEFAULT))


def _made_by(kind: type[TracerProvider], limits: dict[str, int] | None = None
             ) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = kind(resource=Resource.create({"service.name": "processor"}), sampler=ParentBased(ALWAYS_ON),
                    id_generator=CountingIds(), span_limits=SpanLimits(**(LIMITS if limits is None else limits)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _turn(tracer: trace.Tracer) -> list[trace.Span]:
    """A turn's worth of spans, and everything odd a span can be asked to do. Returns the spans it started."""
    started: list[trace.Span] = []
    with tracer.start_as_current_span("POST /webhooks/twilio", kind=SpanKind.SERVER,
                                      attributes={"http.method": "POST", "n": 1}) as root:
        started.append(root)
        root.set_attributes({"http.status_code": 200, "n": 2})  # a key set again: moved to the end
        root.set_attribute("list", [1, 2])  # a list: kept as a tuple
        with tracer.start_as_current_span("child", attributes={"a": "x", "f": 0.5, "b": True}) as child:
            started.append(child)
            child.set_attributes({"long": "y" * 40, "empty": "", "bytes": b"raw"})  # truncated; full now: oldest out
            child.add_event("retry", {"attempt": 2, "why": "timeout" * 3})
            child.add_event("again")
            child.add_event("third")
            child.add_event("fourth")  # one more than the limit: the first is dropped
            child.update_name("child renamed")
        consumer = tracer.start_span("run/task", context=set_span_in_context(NonRecordingSpan(REMOTE)),
                                     kind=SpanKind.CONSUMER,
                                     attributes={"messaging.system": "celery", "": "no key", "none": None})
        started.append(consumer)
        consumer.add_link(root.get_span_context(), {"why": "same turn"})
        consumer.set_status(Status(StatusCode.ERROR, "refused"))
        consumer.set_status(StatusCode.OK)  # ERROR to OK is allowed; UNSET after is ignored
        consumer.set_status(StatusCode.UNSET)
        consumer.end()
        consumer.end()  # a second end is warned about, not exported again
        consumer.set_attribute("late", 1)  # after the end: ignored
        with pytest.raises(ValueError), tracer.start_as_current_span("fails") as failing:
            started.append(failing)
            raise ValueError("no such repository")
        with pytest.raises(KeyError), tracer.start_as_current_span("quiet", record_exception=False,
                                          set_status_on_exception=False) as quiet:
            started.append(quiet)
            raise KeyError("x")
        long = tracer.start_span("long", attributes={"statement": "SELECT " + "x" * 30})  # truncated
        started.append(long)
        long.set_attributes({"more": "z" * 20})
        long.end()
        too_many = tracer.start_span("too many", attributes={f"k{i}": i for i in range(7)})
        started.append(too_many)
        too_many.end()
        dropped = tracer.start_span("not sampled", context=set_span_in_context(NonRecordingSpan(UNSAMPLED)))
        assert isinstance(dropped, NonRecordingSpan)  # no span at all
        dropped.end()
        linked = tracer.start_span("linked", links=[Link(REMOTE, {"l": 1})])
        started.append(linked)
        linked.end()
        timed = tracer.start_span("timed", start_time=1_700_000_000_000_000_000)
        started.append(timed)
        timed.end(end_time=1_700_000_000_000_000_500)

        @tracer.start_as_current_span("decorated")
        def decorated() -> trace.Span:
            return trace.get_current_span()

        started += [decorated(), decorated()]
    return started


def _record(span: ReadableSpan, exact_times: bool) -> tuple[Any, ...]:
    def event(e: Any) -> tuple[Any, ...]:
        attributes = dict(e.attributes or {})
        # The traceback differs by the frame that caught the exception (a generator's or __exit__'s).
        stack = attributes.pop("exception.stacktrace", "")
        return e.name, attributes, e.dropped_attributes, stack.strip().splitlines()[-1:] if stack else []

    ctx = span.get_span_context()
    assert ctx is not None
    return (
        span.name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.trace_state.to_header(), ctx.is_remote,
        (span.parent.trace_id, span.parent.span_id, span.parent.is_remote) if span.parent else None,
        span.kind, list((span.attributes or {}).items()), span.dropped_attributes,
        [event(e) for e in span.events], span.dropped_events,
        [(link.context, dict(link.attributes or {})) for link in span.links], span.dropped_links,
        span.status.status_code, span.status.description, span.resource, span.instrumentation_scope,
        (span.start_time, span.end_time) if exact_times else (span.start_time is not None, span.end_time is not None),
    )


def test_the_lean_provider_makes_the_spans_the_sdk_makes() -> None:
    stock, stock_spans = _made_by(TracerProvider)
    lean, lean_spans = _made_by(LeanTracerProvider)
    _turn(stock.get_tracer("repotalk", "1.0"))
    started = _turn(lean.get_tracer("repotalk", "1.0"))

    expected = [_record(span, exact_times=span.name == "timed") for span in stock_spans.get_finished_spans()]
    got = [_record(span, exact_times=span.name == "timed") for span in lean_spans.get_finished_spans()]
    assert [r[0] for r in got] == [r[0] for r in expected]
    for ours, theirs in zip(got, expected, strict=True):
        assert ours == theirs
    # The short way where it applies; the SDK's (and no span at all for an unsampled parent) where it does not.
    kinds = {span.get_span_context().span_id: type(span) for span in started}
    by_name = {span.name: kinds[span.get_span_context().span_id] for span in lean_spans.get_finished_spans()}
    assert by_name["POST /webhooks/twilio"] is LeanSpan and by_name["child renamed"] is LeanSpan
    assert by_name["run/task"] is LeanSpan and by_name["decorated"] is LeanSpan and by_name["fails"] is LeanSpan
    assert by_name["linked"] is not LeanSpan and by_name["timed"] is not LeanSpan
    assert "not sampled" not in by_name


class Captures:
    """Where a capturing batch processor's batches go here: the captured spans, kept."""

    def __init__(self) -> None:
        self.spans: list[tuple[Any, ...]] = []

    def export_captured(self, batch: list[tuple[Any, ...]]) -> SpanExportResult:
        self.spans += batch
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _capturing(kind: type[TracerProvider], limits: dict[str, int]) -> tuple[TracerProvider, Captures]:
    """A provider as ``setup`` makes it for OTLP: the capturing batch processor its only one."""
    captures = Captures()
    provider = kind(resource=Resource.create({"service.name": "processor"}), sampler=ParentBased(ALWAYS_ON),
                    id_generator=CountingIds(), span_limits=SpanLimits(**limits))
    provider.add_span_processor(telemetry_otlp.CapturingBatchSpanProcessor(captures))  # type: ignore[arg-type]
    return provider, captures


def _captured(span: tuple[Any, ...], exact_times: bool) -> tuple[Any, ...]:
    """Everything a captured span will be encoded from, comparable across providers (their resources are equal,
    not the same object, so each is numbered apart)."""
    (origin, trace_id, span_id, trace_state, parent_id, parent_remote, name, kind, start, end, attributes,
     dropped_attributes, events, dropped_events, links, dropped_links, code, description) = span
    resource, scope, _, _ = telemetry_otlp._origins.pairs[origin]

    def event(e: Any) -> tuple[Any, ...]:
        attributes = dict(e.attributes or {})
        stack = attributes.pop("exception.stacktrace", "")  # differs by the frame that caught the exception
        return e.name, e.timestamp is not None, attributes, e.dropped_attributes, stack.strip().splitlines()[-1:]

    return (dict(resource.attributes), scope, trace_id, span_id, trace_state, parent_id, parent_remote, name, kind,
            (start, end) if exact_times else (start > 0, end >= start), list(attributes.items()),
            dropped_attributes, [event(e) for e in events], dropped_events,
            [(link.context, dict(link.attributes or {})) for link in links], dropped_links, code, description)


@pytest.mark.parametrize("limits", [LIMITS, {}], ids=["tight limits", "default limits"])
def test_spans_the_capturing_processor_takes_straight_from_the_lean_tracer_are_the_sdks(
    limits: dict[str, int]
) -> None:
    stock, stock_captures = _capturing(TracerProvider, limits)
    lean, lean_captures = _capturing(LeanTracerProvider, limits)
    _turn(stock.get_tracer("repotalk", "1.0"))
    started = _turn(lean.get_tracer("repotalk", "1.0"))
    assert stock.force_flush() and lean.force_flush()

    expected = [_captured(span, exact_times=span[6] == "timed") for span in stock_captures.spans]
    got = [_captured(span, exact_times=span[6] == "timed") for span in lean_captures.spans]
    assert [r[7] for r in got] == [r[7] for r in expected]
    for ours, theirs in zip(got, expected, strict=True):
        assert ours == theirs
    by_name = {span.name: type(span) for span in started}  # type: ignore[attr-defined]
    assert {by_name[name] for name in ("POST /webhooks/twilio", "child renamed", "run/task", "decorated", "fails",
                                       "quiet", "long", "too many")} == {LeanSpan}
    assert by_name["linked"] is not LeanSpan and by_name["timed"] is not LeanSpan
    stock.shutdown()
    lean.shutdown()


def test_with_another_span_processor_beside_the_capturing_one_spans_reach_both() -> None:
    lean, captures = _capturing(LeanTracerProvider, {})
    tracer = lean.get_tracer("repotalk")
    with tracer.start_as_current_span("before"):
        pass
    memory = InMemorySpanExporter()
    lean.add_span_processor(SimpleSpanProcessor(memory))  # from now on, the capturing one is not the only one
    with tracer.start_as_current_span("after"):
        pass
    assert lean.force_flush()
    assert [span[6] for span in captures.spans] == ["before", "after"]
    assert [span.name for span in memory.get_finished_spans()] == ["after"]
    lean.shutdown()


def test_a_childs_flags_and_trace_state_come_from_its_sampled_parent() -> None:
    lean, memory = _made_by(LeanTracerProvider)
    lean.get_tracer("repotalk").start_span("run/task", context=set_span_in_context(NonRecordingSpan(REMOTE))).end()
    (span,) = memory.get_finished_spans()
    ctx = span.get_span_context()
    assert ctx is not None and ctx.trace_id == REMOTE.trace_id and ctx.trace_state == REMOTE.trace_state
    assert ctx.trace_flags.sampled and ctx.trace_flags.random_trace_id and not ctx.is_remote


def test_another_sampler_gets_the_sdks_way() -> None:
    lean, memory = _made_by(LeanTracerProvider)
    lean.sampler = ParentBased(ALWAYS_ON, local_parent_sampled=ALWAYS_OFF)  # before its tracers are made
    tracer = lean.get_tracer("other")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child") as child:
        assert not isinstance(child, LeanSpan) and not child.is_recording()  # the sampler said no
    assert [s.name for s in memory.get_finished_spans()] == ["root"]


def test_every_tracer_of_the_lean_provider_is_lean_and_still_cached() -> None:
    lean, _ = _made_by(LeanTracerProvider)
    first = lean.get_tracer("opentelemetry.instrumentation.sqlalchemy", "0.66b1")
    assert type(first) is LeanTracer and lean.get_tracer("opentelemetry.instrumentation.sqlalchemy", "0.66b1") is first


SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
    "path": "/webhooks/twilio", "raw_path": b"/webhooks/twilio", "query_string": b"", "root_path": "",
    "headers": [(b"host", b"bot.example.com"), (b"content-type", b"application/x-www-form-urlencoded"),
                (b"user-agent", b"TwilioProxy/1.1"), (b"x-twilio-signature", b"abc")],
    "client": ("10.0.0.7", 50123), "server": ("10.0.0.2", 8000),
}


@pytest.mark.parametrize("scopes", [
    [SCOPE, SCOPE, {**SCOPE, "client": ("10.0.0.8", 40000)}],  # the same request from another client
    [{**SCOPE, "client": None}, {**SCOPE, "query_string": b"a=%20b"}, {**SCOPE, "headers": []}],
    [{**SCOPE, "server": None, "headers": [(b"Host", b"a"), (b"host", b"b"), (b"user-agent", b"curl/8.0")]},
     {**SCOPE, "http_version": "2", "method": "GET", "scheme": "http"}],
])
def test_the_webhooks_server_span_has_the_asgi_instrumentations_attributes(
    scopes: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability,
        _OpenTelemetryStabilitySignalType,
    )

    provider, memory = _made_by(LeanTracerProvider, limits={})
    monkeypatch.setattr(telemetry, "_provider", provider)
    monkeypatch.setattr(telemetry, "_tracer", provider.get_tracer("repotalk"))
    _OpenTelemetrySemanticConventionStability._initialize()
    mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP)

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    traced = telemetry.server_span_asgi(endpoint)
    for scope in scopes:
        asyncio.run(traced(scope, receive, send))
    spans = memory.get_finished_spans()
    assert len(spans) == len(scopes)
    for span, scope in zip(spans, scopes, strict=True):
        attributes = dict(span.attributes or {})
        status = {k: attributes.pop(k) for k in ("http.status_code", "http.response.status_code") if k in attributes}
        assert list(status.values()) == [200] * len(status) and status
        assert attributes == collect_request_attributes(scope, mode)
