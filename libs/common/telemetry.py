"""OpenTelemetry tracing for every process: set up once, after any fork, flushed at shutdown.

Off unless an exporter is configured (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_TRACES_EXPORTER`` other than ``none``, or ``REPOTALK_TRACE_FILE``): then nothing is installed and every
helper here returns at once, so the hot paths pay a function call and no more.

One conversation turn is one trace. Context crosses the bus in Celery headers (our own producer span,
see ``publish_span``) and crosses the gateway's transactional outbox inside the envelope (``trace``, a
W3C traceparent), because the webhook's request is over when the relay publishes its event.

Span attributes never hold personal data: hashed user ids, MessageSids, counts and sizes only.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.propagate import extract, get_global_textmap, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from libs.common.settings import get_settings

log = logging.getLogger(__name__)

TRACER_NAME = "repotalk"
# Statements whose span name and attributes an engine keeps (a bound: statements with values written into their
# text would each be new).
STATEMENTS_KEPT = 1024
_POOL_EVENTS = frozenset({"connect", "close", "checkin", "checkout"})
# Kept out of traces: probes and scrapes every few seconds would bury the turns.
EXCLUDED_URLS = "health,ready,metrics"

_lock = threading.Lock()
_provider: Any = None
_instrumented: set[str] = set()
_tracer: trace.Tracer = trace.NoOpTracer()
# The W3C trace-context propagator setup installs when OTEL_PROPAGATORS chooses none. While it is the global one, a
# context is written to and read from message headers and outbox rows here (``_carrier``, ``_extract``), as it would
# do, without the generic carrier machinery around it: a few times per hop of every turn, traced or not.
_w3c: Any = None


def exporter_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process should trace: an OTLP endpoint, an explicit exporter or a trace file."""
    env = os.environ if env is None else env
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        exporter
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("REPOTALK_TRACE_FILE", "").strip()
    )


def enabled() -> bool:
    return _provider is not None


class JsonLinesSpanExporter:
    """Writes each finished span as one JSON line (tests, the benchmark, a look without a collector).

    Several processes may share the file: each export is one ``write`` in append mode."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_record(span), separators=(",", ":")) + "\n" for span in spans)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: Any) -> dict[str, Any]:
    """A finished span as plain JSON: ids in hex, as Jaeger shows them."""
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name", ""),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
        "resource": dict(span.resource.attributes),
    }


class RateLimit:
    """A token bucket: ``take`` grants at most ``rate`` a second, and a burst of up to ``rate`` after a quiet spell."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0 - 1e-9:  # a turn exactly on the rate is not refused for a rounding error
                self.tokens -= 1.0
                return True
            return False


def _root_sampler(ratio: float, max_per_second: float = 0.0, clock: Callable[[], float] = time.monotonic) -> Any:
    """Start a trace only at a request (or a span of our own), ``ratio`` of them and at most ``max_per_second``
    (0: no cap). Dropped as roots: database, Redis and HTTP calls outside any request (the outbox sweep), and
    tasks that arrive without trace context (analytics' batches, which mix many turns): they are most of the
    spans and none of the turns.

    The cap bounds what tracing costs under a flood (bench/tracing_cost measures it beside every turn traced)
    while a team's ordinary traffic, far below it, is traced turn by turn."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased

    ratio_sampler = TraceIdRatioBased(ratio)
    limit = RateLimit(max_per_second, clock) if max_per_second > 0 else None

    class RootKindSampler(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Any = None, trace_state: Any = None) -> Any:
            if kind in (SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER):
                return SamplingResult(Decision.DROP)
            result = ratio_sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
            if limit is not None and result.decision is Decision.RECORD_AND_SAMPLE and not limit.take():
                return SamplingResult(Decision.DROP)
            return result

        def get_description(self) -> str:
            return f"RootKindSampler({ratio}, at most {max_per_second or 'any'}/s)"

    return RootKindSampler()


def setup(service: str, role: str = "worker") -> bool:
    """Install the tracer provider and instrument libraries, once per process (call it after a fork).

    Returns whether tracing is on. ``role`` tells the gateway's HTTP process from its worker."""
    global _provider, _tracer, _w3c
    with _lock:
        if _provider is not None:
            return True
        if not exporter_configured():
            return False
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased

        import repotalk
        from libs.common.telemetry_spans import LeanTracerProvider

        settings = get_settings()
        resource = Resource.create({
            "service.name": service,
            "service.namespace": "repotalk",
            "service.version": getattr(repotalk, "__version__", "0"),
            "deployment.environment": settings.app.env,
            "repotalk.process": role,
        })
        provider = LeanTracerProvider(resource=resource,
                                  sampler=ParentBased(root=_root_sampler(settings.telemetry.sample_ratio,
                                                                            settings.telemetry.max_traces_per_second)))
        exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        trace_file = settings.telemetry.trace_file
        if trace_file:
            provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(trace_file)))  # type: ignore[arg-type]
        if exporter_name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif exporter_name == "otlp" or (not exporter_name and (
                os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))):
            # The SDK's OTLP/HTTP exporter, which reads the OTEL_EXPORTER_OTLP_* variables itself (endpoint,
            # headers, timeout, compression), and its batch processor (OTEL_BSP_*), queueing plain values instead of
            # spans and encoding them with a leaner protobuf encoder (see telemetry_otlp: a third of the CPU, and far
            # less for the GC to do).
            from libs.common.telemetry_otlp import CapturingBatchSpanProcessor, FastOTLPSpanExporter

            provider.add_span_processor(CapturingBatchSpanProcessor(FastOTLPSpanExporter()))
        if not os.environ.get("OTEL_PROPAGATORS", "").strip():
            # W3C trace context alone: repotalk sets no baggage, and the default composite would look for it in
            # every message, request and outbox row. OTEL_PROPAGATORS still chooses others.
            from opentelemetry.propagate import set_global_textmap
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            _w3c = TraceContextTextMapPropagator()
            set_global_textmap(_w3c)
        trace.set_tracer_provider(provider)
        _provider = provider
        _tracer = provider.get_tracer(TRACER_NAME)
        _instrument_libraries()
        atexit.register(shutdown)
        log.info("tracing on for %s (%s)", service, role)
        return True


def _instrument_libraries() -> None:
    """Outbound HTTP (twilio goes through urllib3 or requests). openai and anthropic use httpx2, which no
    instrumentation covers: ai_engine wraps each provider call in a span of its own (services/ai_engine/chain.py).
    Celery is traced by the bus itself (``publish_span`` and ``consume_span``), and Redis client by client
    (``instrument_redis``)."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    for name, instrumentor in (("requests", RequestsInstrumentor()), ("urllib3", URLLib3Instrumentor())):
        if name not in _instrumented:
            instrumentor.instrument()
            _instrumented.add(name)


def _only_in_a_trace(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    if trace.get_current_span().is_recording():
        return wrapped(*args, **kwargs)
    return wrapped.__wrapped__(*args, **kwargs)  # the uninstrumented command


def instrument_redis(client: Any) -> Any:
    """Trace the commands of a Redis client of repotalk's own (the queue-depth collector's), inside a recording
    span only.

    The broker's connections are not instrumented: a task's publish and run are already its spans, and kombu's
    polls, acknowledgements and re-queues outside any turn would pass through the instrumentation several times
    per task only to be dropped."""
    if _provider is None:
        return client
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from wrapt import wrap_function_wrapper

    def pipeline(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        created = wrapped(*args, **kwargs)  # with the instrumentation's own wrappers
        for name in ("execute", "immediate_execute_command"):
            wrap_function_wrapper(created, name, _only_in_a_trace)
        return created

    RedisInstrumentor.instrument_client(client)
    wrap_function_wrapper(client, "execute_command", _only_in_a_trace)
    wrap_function_wrapper(client, "pipeline", pipeline)
    return client


def trace_engine(engine: Any) -> Any:
    """SQLAlchemy statements of ``engine`` as client spans (every engine comes from ``db.make_engine``:
    instrumenting ``create_engine`` globally would miss modules that imported it before tracing started)."""
    if _provider is None:
        return engine
    from opentelemetry.instrumentation._semconv import _set_db_operation, _set_db_statement, _set_db_system
    from opentelemetry.instrumentation.sqlalchemy.engine import (
        EngineTracer,
        _get_attributes_from_url,
        _get_db_name_from_cursor_or_conn,
    )
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    from opentelemetry.metrics import get_meter

    class TurnEngineTracer(EngineTracer):
        """The instrumentation's engine tracer, with the same spans (name, kind, attributes) made for less.

        Outside a recording span (the outbox sweep, analytics' batches, the ingress committer) a statement's span
        would be dropped by the sampler after its attributes were read off the connection: skipped. Inside one, the
        connection attributes (host, port, database, user: the engine's URL) are read once per engine instead of
        once per statement, a statement's name and attributes are made once per statement text (its operation the
        statement's first word, found without splitting the whole statement twice), and they go in with the span
        instead of one ``set_attribute`` at a time under the span made current for nothing. With sqlcommenter on, or
        a URL without a host (SQLite), the stock path.
        tests/libs/common/test_telemetry_otlp.py compares the spans with the stock tracer's."""

        _url_attributes: dict[str, Any] | None = None
        # A statement's span name and attributes, by database and statement: SQLAlchemy compiles a fixed set of
        # statements (values go as parameters), so a turn's statements are found here after the first turns.
        _statements: dict[tuple[Any, Any], tuple[Any, dict[str, Any]]]

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._statements = {}
            # The database a DBAPI connection is on, which it cannot change (reading it off psycopg's connection
            # decodes it anew each time).
            self._db_names: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
            super().__init__(*args, **kwargs)

        def _db_name(self, conn: Any, cursor: Any) -> Any:
            dbapi = getattr(cursor, "connection", None)
            try:
                return self._db_names[dbapi]
            except (KeyError, TypeError):  # not seen yet; or None, or a connection without weak references
                pass
            db_name = _get_db_name_from_cursor_or_conn(self.vendor, conn, cursor)
            with suppress(TypeError):
                self._db_names[dbapi] = db_name
            return db_name

        @classmethod
        def _register_event_listener(cls, target: Any, identifier: str, func: Any, *args: Any, **kw: Any) -> None:
            # The pool's listeners keep OpenTelemetry's db.client.connections.usage, which nothing reads here
            # (repotalk's metrics are Prometheus, and no OpenTelemetry meter provider is set): two counter updates
            # per connection checkout, on every checkout of a traced process, sampled turn or not.
            if identifier in _POOL_EVENTS:
                return
            super()._register_event_listener(target, identifier, func, *args, **kw)

        def _before_cur_exec(self, conn: Any, cursor: Any, statement: Any, params: Any, context: Any,
                             executemany: bool) -> Any:
            if not trace.get_current_span().is_recording():
                return statement, params
            url_attributes = self._url_attributes
            if url_attributes is None:
                url_attributes, found = _get_attributes_from_url(conn.engine.url, self._sem_conv_opt_in_mode_db,
                                                                 self._sem_conv_opt_in_mode_http)
                # Without a host in the URL, the stock path reads them off the connection: {} sends it there.
                self._url_attributes = url_attributes = url_attributes if found else {}
            if self.enable_commenter or not url_attributes or not is_instrumentation_enabled():
                return super()._before_cur_exec(conn, cursor, statement, params, context, executemany)
            db_name = self._db_name(conn, cursor)
            key = (db_name, statement)
            found = self._statements.get(key)
            if found is None:
                operation = self._operation_name(db_name, statement)
                attributes = dict(url_attributes)
                _set_db_statement(attributes, statement, self._sem_conv_opt_in_mode_db)
                _set_db_system(attributes, self.vendor, self._sem_conv_opt_in_mode_db)
                _set_db_operation(attributes, operation, self._sem_conv_opt_in_mode_db)
                found = (operation, attributes)
                if len(self._statements) < STATEMENTS_KEPT:
                    self._statements[key] = found
            # The span copies the attributes: the cached dict is never changed.
            context._otel_span = self.tracer.start_span(found[0], kind=SpanKind.CLIENT, attributes=found[1])
            return statement, params

        def _operation_name(self, db_name: Any, statement: Any) -> Any:
            # The stock version strips a leading /* comment */ and splits the whole statement to take its first word.
            if isinstance(statement, str) and not statement.startswith("/*"):
                first = statement.split(None, 1)
                if first:
                    return f"{first[0]} {db_name}" if db_name else first[0]
            return super()._operation_name(db_name, statement)

    usage = get_meter(TRACER_NAME).create_up_down_counter("db.client.connections.usage", unit="connections")
    TurnEngineTracer(_tracer, engine, usage)
    return engine


def instrument_app(app: Any) -> None:
    """Server spans for the FastAPI gateway, the inbound-webhook shortcut included (``app.inbound_asgi``)."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"])
    if hasattr(app, "inbound_asgi"):
        app.inbound_asgi = server_span_asgi(app.serve_inbound)


_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
# The headers collect_request_attributes reads, and a bound on the requests whose attributes are kept.
_REQUEST_HEADERS = frozenset({b"host", b"user-agent"})
REQUESTS_KEPT = 256


def server_span_asgi(app: Any) -> Any:
    """``app`` (one ASGI endpoint: the inbound webhook, every message of every user) inside a server span with the
    ASGI instrumentation's own request attributes and status handling, made without its middleware.

    The middleware also keeps OpenTelemetry metrics (no meter provider here: Prometheus has them), checks excluded
    URLs, runs hooks and wraps every ASGI message, none of which this endpoint needs."""
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability,
        _OpenTelemetryStabilitySignalType,
        _set_http_peer_ip_server,
        _set_http_peer_port_server,
    )
    from opentelemetry.instrumentation.asgi import collect_request_attributes, set_status_code

    # The attribute names the middleware would use (OTEL_SEMCONV_STABILITY_OPT_IN).
    _OpenTelemetrySemanticConventionStability._initialize()
    mode = _OpenTelemetrySemanticConventionStability._get_opentelemetry_stability_opt_in_mode(
        _OpenTelemetryStabilitySignalType.HTTP)
    # collect_request_attributes' result but for the client's address, by everything else it reads: the same few
    # values request after request (decoding every header to find two of them was most of a server span's cost).
    by_request: dict[tuple[Any, ...], dict[str, Any]] = {}

    def request_attributes(scope: Any) -> dict[str, Any]:
        headers = tuple((key, value) for key, value in scope.get("headers") or () if key.lower() in _REQUEST_HEADERS)
        server = scope.get("server")
        key = (scope.get("scheme"), tuple(server) if server else None, scope.get("http_version"), scope.get("path"),
               scope.get("query_string"), scope.get("method"), headers)
        found = by_request.get(key)
        if found is None:
            found = collect_request_attributes({**scope, "client": None}, mode)
            if len(by_request) < REQUESTS_KEPT:
                by_request[key] = found
        attributes = dict(found)
        client = scope.get("client")
        if client is not None:
            _set_http_peer_ip_server(attributes, client[0], mode)
            _set_http_peer_port_server(attributes, client[1], mode)
            attributes = {k: v for k, v in attributes.items() if v is not None}
        return attributes

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers") or ()
                   if key in _TRACE_HEADERS}
        # Attributes only for a span that records (the sampler does not read them): most turns may not be traced.
        with _tracer.start_as_current_span(
            f"{scope['method']} {scope['path']}", context=extract(carrier) if carrier else None, kind=SpanKind.SERVER,
        ) as current:
            if not current.is_recording():
                await app(scope, receive, send)
                return
            current.set_attributes(request_attributes(scope))

            async def send_with_status(message: Any) -> None:
                if message["type"] == "http.response.start":
                    set_status_code(current, message["status"], sem_conv_opt_in_mode=mode)
                await send(message)

            await app(scope, receive, send_with_status)

    return traced



def shutdown() -> None:
    """Export what is buffered and stop (worker shutdown, process exit)."""
    global _provider, _tracer
    with _lock:
        provider, _provider = _provider, None
        _tracer = trace.NoOpTracer()
    if provider is not None:
        try:
            provider.force_flush(5000)
            provider.shutdown()
        except Exception:
            log.warning("could not flush the last spans", exc_info=True)


def flush() -> None:
    if _provider is not None:
        _provider.force_flush(5000)


def tracer() -> trace.Tracer:
    return _tracer


def _in_untraced_turn() -> bool:
    """Whether the current context is a turn the root sampler left out: nothing under it is recorded."""
    parent = trace.get_current_span().get_span_context()
    return parent.is_valid and not parent.trace_flags.sampled


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, attributes: Mapping[str, Any] | None = None
         ) -> Iterator[Span | None]:
    """A span around a block, or nothing at all when tracing is off."""
    if _provider is None:
        yield None
        return
    if _in_untraced_turn():
        yield None  # its spans would be dropped one by one
        return
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


def set_attributes(current: Span | None, **attributes: Any) -> None:
    if current is not None and current.is_recording():
        current.set_attributes({f"repotalk.{k}" if "." not in k else k: v for k, v in attributes.items()
                                if v is not None})


def event(name: str, **attributes: Any) -> None:
    """An event on the current span (a retry, say), when it records."""
    if _provider is not None:
        current = trace.get_current_span()
        if current.is_recording():
            current.add_event(name, {k: v for k, v in attributes.items() if v is not None})


@contextmanager
def suppressed() -> Iterator[None]:
    """No instrumentation spans in the block: the span around it already records the call (a Twilio send's
    HTTP request, a publish's LPUSH), and a child saying the same thing again would cost as much as the call."""
    if _provider is None:
        yield
        return
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the request's or the task's), when tracing is on."""
    if _provider is not None:
        set_attributes(trace.get_current_span(), **attributes)


def mark_error(current: Span | None, reason: str) -> None:
    if current is not None and current.is_recording():
        current.set_status(Status(StatusCode.ERROR, reason))


@contextmanager
def publish_span(task: str, queue: str, event_type: str, event_id: str, correlation_id: str
                 ) -> Iterator[dict[str, str] | None]:
    """A producer span around one task sent to a queue; yields the headers that carry its context
    (None when tracing is off).

    The span is not made current: nothing under a send is traced (the broker's connections are not instrumented),
    and the headers are written from the span itself."""
    if _provider is None:
        yield None
        return
    if _in_untraced_turn():
        # No span to make, only the turn's decision to pass on (the consumer's will follow it).
        yield _carrier(trace.get_current_span())
        return
    producer = _tracer.start_span(f"apply_async/{task}", kind=SpanKind.PRODUCER, attributes={
        "messaging.system": "celery",
        "messaging.destination.name": queue,
        "repotalk.event.type": event_type,
        "repotalk.event.id": event_id,
        "repotalk.correlation_id": correlation_id,
    })
    try:
        yield _carrier(producer)
    except Exception as exc:  # as start_as_current_span would record it
        if producer.is_recording():
            producer.record_exception(exc)
            producer.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        producer.end()


def _carrier(current: Span) -> dict[str, str]:
    """The headers ``inject`` would write for ``current`` (the span, current or not)."""
    if _w3c is None or get_global_textmap() is not _w3c:
        headers: dict[str, str] = {}
        inject(headers, context=trace.set_span_in_context(current))
        return headers
    ctx = current.get_span_context()
    if ctx == trace.INVALID_SPAN_CONTEXT:
        return {}
    headers = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
    if ctx.trace_state:
        headers["tracestate"] = ctx.trace_state.to_header()
    return headers


# A traceparent as this module writes them (version 00, lower-case hex, nothing after the flags).
_CANONICAL_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_NO_TRACE_ID = "0" * 32
_NO_SPAN_ID = "0" * 16


def _extract(carrier: dict[str, str]) -> otel_context.Context:
    """``extract(carrier)``: for a canonical traceparent without a tracestate, read here as the W3C propagator reads
    it; anything else (another propagator, a tracestate, another version or form) goes to ``extract`` itself."""
    value = carrier.get("traceparent")
    if (_w3c is None or "tracestate" in carrier or type(value) is not str or not _CANONICAL_TRACEPARENT.fullmatch(value)
            or get_global_textmap() is not _w3c):
        return extract(carrier)
    trace_id, span_id = value[3:35], value[36:52]
    if trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID:
        return otel_context.Context()
    remote = trace.SpanContext(int(trace_id, 16), int(span_id, 16), True, trace.TraceFlags(int(value[53:], 16)))
    return trace.set_span_in_context(trace.NonRecordingSpan(remote), otel_context.Context())


@contextmanager
def consume_span(task: str, queue: str, request: Any, event_type: str, event_id: str, correlation_id: str
                 ) -> Iterator[Span | None]:
    """The consumer span of one task a worker runs, continuing the context its producer put in the message
    headers (Celery copies them onto ``task.request``). A task that arrives without one (an analytics batch,
    which mixes many turns) gets no span: a trace starts at a request, never at a stray task."""
    if _provider is None:
        yield None
        return
    carrier = {key: value for key in ("traceparent", "tracestate")
               if isinstance(value := getattr(request, key, None), str)}
    if "traceparent" not in carrier:
        yield None
        return
    parent = _extract(carrier)
    if not trace.get_current_span(parent).get_span_context().trace_flags.sampled:
        # Not sampled: no span, but the handler runs in the turn's context, so its spans follow the decision too.
        token = otel_context.attach(parent)
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    attributes: dict[str, str | int] = {
        "messaging.system": "celery",
        "messaging.destination.name": queue,
        "messaging.message.id": str(getattr(request, "id", "") or ""),
        "repotalk.event.type": event_type,
        "repotalk.event.id": event_id,
        "repotalk.correlation_id": correlation_id,
        "repotalk.delivery": int(getattr(request, "retries", 0) or 0) + 1,
    }
    # Exceptions are reported by the bus (mark_error with the type only): their messages may quote data.
    with _tracer.start_as_current_span(f"run/{task}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attributes, record_exception=False,
                                       set_status_on_exception=False) as current:
        yield current


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent (kept with an outbox row), or None."""
    if _provider is None:
        return None
    return _carrier(trace.get_current_span()).get("traceparent")


@contextmanager
def remote_parent(traceparent_value: str | None) -> Iterator[None]:
    """Make a stored traceparent the current context for the block (the outbox relay's publish)."""
    if _provider is None or not traceparent_value:
        yield
        return
    token = otel_context.attach(_extract({"traceparent": traceparent_value}))
    try:
        yield
    finally:
        otel_context.detach(token)


def _sampled_context() -> trace.SpanContext | None:
    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid and ctx.trace_flags.sampled else None


def in_sampled_trace() -> bool:
    """Whether the current span belongs to a trace that is kept (what an exemplar may point at)."""
    return _sampled_context() is not None


def current_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the recording span, for log lines and exemplars."""
    ctx = _sampled_context()
    if ctx is None:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"
