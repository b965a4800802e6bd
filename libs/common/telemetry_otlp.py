"""OTLP/HTTP span export with a protobuf encoder written for our spans: same bytes on the wire, a third of the CPU.

The SDK's encoder builds a tree of protobuf message objects (one per span, attribute and value) and then serializes
it, and it groups spans by hashing each one's Resource, which JSON-dumps the resource's attributes for every span.
In bench/webhook that was the largest single cost of tracing (the BatchSpanProcessor's thread, holding the GIL).
This module writes the protobuf wire format of ``ExportTraceServiceRequest`` directly, caching what repeats
(resources, scopes, attribute keys), and hands the bytes to the SDK's own OTLP/HTTP client: the endpoint, headers,
timeout, compression, TLS and retries still come from the standard ``OTEL_EXPORTER_OTLP_*`` variables.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto;
tests/libs/common/test_telemetry_otlp.py decodes the output with the official ``opentelemetry-proto`` classes and
compares it with the SDK encoder's.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util import BoundedList

log = logging.getLogger(__name__)

# SpanFlags (trace.proto): whether the parent is remote is known (0x100), and is it (0x200).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 on the wire: two's complement, ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 128 (most keys, values and attributes) as one precomputed byte each.
_SMALL = [bytes((i,)) for i in range(128)]


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or sub-message)."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 128 else _varint(size)) + payload


# Tags: (field number << 3) | wire type, as bytes (all below 16 fit in one byte, except Span.flags = 16).
_T1_LEN, _T2_LEN, _T3_LEN, _T4_LEN, _T5_LEN, _T6_LEN, _T7_LEN = (bytes(((n << 3) | 2,)) for n in range(1, 8))
_ANY_BOOL = b"\x10"  # AnyValue.bool_value = 2, varint
_ANY_INT = b"\x18"  # AnyValue.int_value = 3, varint
_ANY_DOUBLE = b"\x21"  # AnyValue.double_value = 4, fixed64
_SPAN_KIND = b"\x30"  # Span.kind = 6, varint
_SPAN_START = b"\x39"  # Span.start_time_unix_nano = 7, fixed64
_SPAN_END = b"\x41"  # Span.end_time_unix_nano = 8, fixed64
_SPAN_ATTRIBUTE = b"\x4a"  # Span.attributes = 9
_SPAN_DROPPED_ATTRIBUTES = b"\x50"  # 10, varint
_SPAN_EVENT = b"\x5a"  # 11
_SPAN_DROPPED_EVENTS = b"\x60"  # 12, varint
_SPAN_LINK = b"\x6a"  # 13
_SPAN_DROPPED_LINKS = b"\x70"  # 14, varint
_SPAN_STATUS = b"\x7a"  # 15
_SPAN_FLAGS = b"\x85\x01"  # 16, fixed32
_EVENT_TIME = b"\x09"  # Event.time_unix_nano = 1, fixed64
_EVENT_DROPPED_ATTRIBUTES = b"\x20"  # Event.dropped_attributes_count = 4, varint
_LINK_DROPPED_ATTRIBUTES = b"\x28"  # Link.dropped_attributes_count = 5, varint
_LINK_FLAGS = b"\x35"  # Link.flags = 6, fixed32
_STATUS_CODE = b"\x18"  # Status.code = 3, varint

_key_cache: dict[str, bytes] = {}


def _encode_value(value: Any) -> bytes:
    """An AnyValue's fields (without its own tag and length)."""
    kind = type(value)
    if kind is str:
        return _field(_T1_LEN, value.encode())
    if kind is bool:
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"integer out of int64 range: {value}")
        return _ANY_INT + _varint(value)
    if kind is float:
        return _ANY_DOUBLE + _pack_double(value)
    # Subclasses and the rarer kinds, in the order the SDK's encoder tests them.
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _field(_T1_LEN, value.encode())
    if isinstance(value, int):
        return _encode_value(int(value))
    if isinstance(value, float):
        return _ANY_DOUBLE + _pack_double(value)
    if isinstance(value, bytes):
        return _field(_T7_LEN, bytes(value))
    if isinstance(value, Sequence):
        array = b"".join(_field(_T1_LEN, _encode_value(v)) for v in value)
        return _field(_T5_LEN, array)
    if isinstance(value, Mapping):
        kvlist = b"".join(_field(_T1_LEN, _encode_key_value(str(k), v)) for k, v in value.items())
        return _field(_T6_LEN, kvlist)
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _encode_key_value(key: str, value: Any) -> bytes:
    encoded_key = _key_cache.get(key)
    if encoded_key is None:
        encoded_key = _field(_T1_LEN, key.encode())
        if len(_key_cache) < 4096:  # keys are a small fixed set; never let odd ones grow this without bound
            _key_cache[key] = encoded_key
    return encoded_key + _field(_T2_LEN, _encode_value(value))


# Encoded string attributes (tag, key and value), by all three. Most attributes repeat span after span (a statement's
# text, a queue's name, an event type), and the value of one is found in the time it takes to encode it. Bounded: at
# most PAIR_VALUES_PER_KEY values of a key (ids, different every time, stop there) and PAIR_BYTES_KEPT in all.
PAIR_VALUES_PER_KEY = 256
PAIR_BYTES_KEPT = 4 << 20
_pairs: dict[tuple[bytes, str, str], bytes] = {}
_pair_values: dict[str, int] = {}
_pair_bytes = 0


def _keep_pair(tag: bytes, key: str, value: str, encoded: bytes) -> None:
    global _pair_bytes
    count = _pair_values.get(key, 0)
    if count < PAIR_VALUES_PER_KEY and _pair_bytes + len(encoded) <= PAIR_BYTES_KEPT and len(_pair_values) < 4096:
        _pair_values[key] = count + 1
        _pair_bytes += len(encoded)
        _pairs[(tag, key, value)] = encoded


def _encode_attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a repeated KeyValue field ``tag``. Like the SDK's encoder, an attribute that cannot be
    encoded is logged and left out rather than losing the batch."""
    if not attributes:
        return b""
    parts: list[bytes] = []
    keys = _key_cache
    pairs = _pairs
    small = _SMALL
    # A BoundedAttributes' own dict: iterating the mapping itself goes through its Python __iter__ and __getitem__.
    plain = getattr(attributes, "_dict", None)
    for key, value in (plain if type(plain) is dict else attributes).items():
        # The common cases inline (a string seen before; a cached key and a short string value): this loop is most
        # of the encoder's time.
        if type(value) is str:
            found = pairs.get((tag, key, value))
            if found is not None:
                parts.append(found)
                continue
            encoded_key = keys.get(key)
            raw = value.encode()
            size = len(raw)
            if encoded_key is not None and size < 126:
                any_value = b"\x12" + small[size + 2] + b"\x0a" + small[size] + raw
                size = len(encoded_key) + len(any_value)
                encoded = tag + (small[size] if size < 128 else _varint(size)) + encoded_key + any_value
            else:
                encoded = _field(tag, _encode_key_value(key, value))
            parts.append(encoded)
            _keep_pair(tag, key, value, encoded)
            continue
        try:
            parts.append(_field(tag, _encode_key_value(key, value)))
        except Exception as error:
            log.exception("Failed to encode key %s: %s", key, error)
    return b"".join(parts)


# A finished span as ``capture`` keeps it, by position (a tuple: made and read faster than any object).
(_AT_ORIGIN, _AT_TRACE_ID, _AT_SPAN_ID, _AT_TRACE_STATE, _AT_PARENT_ID, _AT_PARENT_REMOTE, _AT_NAME, _AT_KIND,
 _AT_START, _AT_END, _AT_ATTRIBUTES, _AT_DROPPED_ATTRIBUTES, _AT_EVENTS, _AT_DROPPED_EVENTS, _AT_LINKS,
 _AT_DROPPED_LINKS, _AT_STATUS_CODE, _AT_STATUS_DESCRIPTION) = range(18)


def capture(span: ReadableSpan) -> tuple[Any, ...]:
    """What encoding needs of a finished span, as plain values: its origin's number, ids, name, kind, times, its
    attribute dict (immutable once the span ended), events, links and status.

    The tuple holds no object the garbage collector tracks (for most spans: events and links are empty), so the
    collector untracks it at its first pass and it never reaches the oldest generation while it waits for export;
    the span itself is freed as it ends. The span's fields are read directly: each ReadableSpan property is a call,
    and a dozen of them were most of the time here."""
    ctx = span._context
    if ctx is None:
        raise ValueError(f"span {span._name!r} has no context")
    parent = span._parent
    trace_state = ctx.trace_state
    status = span._status
    attributes = span._attributes
    dropped_attributes = 0
    if type(attributes) is BoundedAttributes:
        dropped_attributes = attributes.dropped
        attributes = attributes._dict
    events = span._events
    links = span._links
    return (
        _origins.number(span._resource, span._instrumentation_scope or None),
        ctx.trace_id,
        ctx.span_id,
        ",".join(f"{k}={v}" for k, v in trace_state.items()) if trace_state else "",
        None if parent is None else parent.span_id,
        parent is not None and parent.is_remote,
        span._name,
        span._kind.value,
        span._start_time,
        span._end_time,
        attributes,
        dropped_attributes,
        tuple(events) if events else (),
        events.dropped if type(events) is BoundedList else 0,
        tuple(links) if links else (),
        links.dropped if type(links) is BoundedList else 0,
        status.status_code.value,
        status.description,
    )


def _encode_captured(span: tuple[Any, ...]) -> bytes:
    """A captured span's ``Span`` message."""
    parts = [
        b"\x0a\x10", span[_AT_TRACE_ID].to_bytes(16, "big"),  # trace_id = 1
        b"\x12\x08", span[_AT_SPAN_ID].to_bytes(8, "big"),  # span_id = 2
    ]
    trace_state = span[_AT_TRACE_STATE]
    if trace_state:
        parts.append(_field(_T3_LEN, trace_state.encode()))
    parent_id = span[_AT_PARENT_ID]
    if parent_id is not None:
        parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))  # parent_span_id = 4
    name = span[_AT_NAME]
    if name:
        parts.append(_field(_T5_LEN, name.encode()))
    # The API's INTERNAL..CONSUMER are 0..4; the proto's 1..5 (0: unspecified).
    parts += (_SPAN_KIND, _SMALL[span[_AT_KIND] + 1])
    if span[_AT_START]:
        parts += (_SPAN_START, _pack_fixed64(span[_AT_START]))
    if span[_AT_END]:
        parts += (_SPAN_END, _pack_fixed64(span[_AT_END]))
    parts.append(_encode_attributes(_SPAN_ATTRIBUTE, span[_AT_ATTRIBUTES]))
    if span[_AT_DROPPED_ATTRIBUTES]:
        parts += (_SPAN_DROPPED_ATTRIBUTES, _varint(span[_AT_DROPPED_ATTRIBUTES]))
    for event in span[_AT_EVENTS]:
        parts.append(_field(_SPAN_EVENT, _encode_event(event)))
    if span[_AT_DROPPED_EVENTS]:
        parts += (_SPAN_DROPPED_EVENTS, _varint(span[_AT_DROPPED_EVENTS]))
    for link in span[_AT_LINKS]:
        parts.append(_field(_SPAN_LINK, _encode_link(link)))
    if span[_AT_DROPPED_LINKS]:
        parts += (_SPAN_DROPPED_LINKS, _varint(span[_AT_DROPPED_LINKS]))
    code = span[_AT_STATUS_CODE]
    description = span[_AT_STATUS_DESCRIPTION]
    status_fields = (_field(_T2_LEN, description.encode()) if description else b"") + (
        _STATUS_CODE + _SMALL[code] if code else b"")
    parts.append(_field(_SPAN_STATUS, status_fields))
    parts += (_SPAN_FLAGS, _pack_fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if span[_AT_PARENT_REMOTE] else 0)))
    return b"".join(parts)


def _encode_event(event: Any) -> bytes:
    parts: list[bytes] = []
    if event.timestamp:
        parts += (_EVENT_TIME, _pack_fixed64(event.timestamp))
    if event.name:
        parts.append(_field(_T2_LEN, event.name.encode()))
    parts.append(_encode_attributes(_T3_LEN, event.attributes))
    if event.dropped_attributes:
        parts += (_EVENT_DROPPED_ATTRIBUTES, _varint(event.dropped_attributes))
    return b"".join(parts)


def _encode_link(link: Any) -> bytes:
    ctx = link.context
    parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    parts.append(_encode_attributes(_T4_LEN, link.attributes))
    if link.dropped_attributes:
        parts += (_LINK_DROPPED_ATTRIBUTES, _varint(link.dropped_attributes))
    parts += (_LINK_FLAGS, _pack_fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if ctx.is_remote else 0)))
    return b"".join(parts)


def _encode_resource(resource: Any) -> bytes:
    """ResourceSpans.resource (field 1), whole."""
    return _field(_T1_LEN, _encode_attributes(_T1_LEN, resource.attributes))


def _encode_scope(scope: Any) -> bytes:
    """ScopeSpans.scope (field 1), whole."""
    if scope is None:
        return b"\x0a\x00"
    fields = _field(_T1_LEN, scope.name.encode()) if scope.name else b""
    if scope.version:
        fields += _field(_T2_LEN, scope.version.encode())
    fields += _encode_attributes(_T3_LEN, scope.attributes)
    return _field(_T1_LEN, fields)


class _Origins:
    """The (resource, instrumentation scope) pairs spans come from, numbered, with their encodings.

    A provider shares one Resource among its spans, found by identity (Resource's hash JSON-dumps its attributes);
    scopes are compared by value (name, version, schema URL), so a tracer made per call adds no pair. A finished
    span becomes its pair's number and its bytes, which the garbage collector does not track, instead of an
    object graph that would sit in the queue for seconds, be promoted to the oldest generation and make full
    collections of the whole heap more frequent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers: dict[tuple[int, Any], int] = {}
        self.pairs: list[tuple[Any, Any, bytes, bytes]] = []  # resource, scope, their encodings

    def number(self, resource: Any, scope: Any) -> int:
        key = (id(resource), scope)
        found = self._numbers.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._numbers.get(key)
            if found is None:
                # The resource is held in ``pairs`` for good: its id in the key cannot be reused by another object.
                self.pairs.append((resource, scope, _encode_resource(resource), _encode_scope(scope)))
                found = self._numbers[key] = len(self.pairs) - 1
            return found


_origins = _Origins()


def encode_captured(captured: Sequence[tuple[Any, ...]]) -> list[tuple[int, bytes]]:
    """Captured spans, encoded: (number of its resource and scope, its ``Span`` message) each."""
    return [(span[_AT_ORIGIN], _encode_captured(span)) for span in captured]


def assemble(encoded: Sequence[tuple[int, bytes]]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` of encoded spans, grouped by resource, then by instrumentation
    scope, each group in order of first appearance (as the SDK's encoder does, equal resources and scopes merged)."""
    by_origin: dict[int, list[bytes]] = {}
    for origin, span in encoded:
        spans = by_origin.get(origin)
        if spans is None:
            spans = by_origin[origin] = []
        spans.append(span)
    # Few groups (one resource and a handful of scopes per process): compare them by equality, not identity.
    resources: list[tuple[Any, bytes, dict[Any, tuple[bytes, list[bytes]]]]] = []
    for origin, spans in by_origin.items():
        resource, scope, encoded_resource, encoded_scope = _origins.pairs[origin]
        group = next((g for g in resources if g[0] is resource or g[0] == resource), None)
        if group is None:
            group = (resource, encoded_resource, {})
            resources.append(group)
        scoped = group[2].get(scope)
        if scoped is None:
            group[2][scope] = (encoded_scope, spans)
        else:
            scoped[1].extend(spans)
    request = []
    for resource, encoded_resource, scopes in resources:
        body = [encoded_resource]
        for scope, (encoded_scope, spans) in scopes.items():
            scope_spans = [encoded_scope]
            scope_spans += [_field(_T2_LEN, span) for span in spans]
            schema_url = scope.schema_url if scope is not None else None
            if schema_url:
                scope_spans.append(_field(_T3_LEN, schema_url.encode()))
            body.append(_field(_T2_LEN, b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_field(_T3_LEN, resource.schema_url.encode()))
        request.append(_field(_T1_LEN, b"".join(body)))
    return b"".join(request)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` of finished spans (what the SDK's ``encode_spans`` serializes to)."""
    return assemble(encode_captured([capture(span) for span in spans]))


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter (configuration, HTTP client, retries, self-metrics) with the encoder above.

    ``_send`` mirrors ``OTLPSpanExporter.export`` of opentelemetry-exporter-otlp-proto-http 1.45 but for the encoding
    call; tests/libs/common/test_telemetry_otlp.py sends batches through it to a local HTTP server."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._send(len(spans), lambda: encode_spans(spans))

    def export_captured(self, captured: Sequence[tuple[Any, ...]]) -> SpanExportResult:
        """Export spans kept by ``capture`` as they ended, encoding them here."""
        return self._send(len(captured), lambda: assemble(encode_captured(captured)))

    def _send(self, count: int, serialize: Callable[[], bytes]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
        from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

        if self._shutdown:
            log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(count) as result:
            try:
                serialized = serialize()
            except Exception as error:
                log.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(serialized, self._max_request_size):
                log.warning("Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                            len(serialized), self._max_request_size)
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(serialized)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes.")
                return SpanExportResult.FAILURE
            sent = self._client.export(serialized)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = ({HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                                      if sent.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


class _CapturedSpanExporter:
    """What the batch processor's thread hands batches to: captured spans, to be encoded, assembled and sent."""

    def __init__(self, exporter: FastOTLPSpanExporter) -> None:
        self.exporter = exporter

    def export(self, batch: list[tuple[Any, ...]]) -> SpanExportResult:
        return self.exporter.export_captured(batch)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class CapturingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor (its queue, thread, OTEL_BSP_* settings, fork handling, flush and shutdown) whose
    queue holds each span's ``capture`` instead of the span, encoded in the export thread.

    What is saved is the garbage collector's work, and the cost of encoding spans one at a time among other work:
    - a queued SDK span is a graph of tracked objects that lives for up to OTEL_BSP_SCHEDULE_DELAY (5 s), long enough
      to reach the oldest generation, where it triggers full collections of the whole heap (70-90 ms each in a
      worker: in a bench/webhook run, the processor made 6 with the SDK's processor against 2 with tracing off). A
      captured span is a tuple of plain values, which the collector untracks, and the span is freed as it ends.
    - encoding each span as it ended (this processor's first version) ran the encoder cold, between a turn's SQL
      and handlers: about three times its cost in a loop over a batch, which is where it runs now."""

    # Its on_start and _on_ending do nothing (the SDK's), and on_end reads only what a LeanSpan has: the lean
    # tracer's spans skip the first two and call on_end directly when this is the provider's only processor.
    takes_lean_spans_directly = True

    def __init__(self, exporter: FastOTLPSpanExporter) -> None:
        super().__init__(_CapturedSpanExporter(exporter))  # type: ignore[arg-type]
        self._emit = self._batch_processor.emit

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        try:
            captured = capture(span)
        except Exception:
            log.exception("could not capture span %s", span.name)
            return
        self._emit(captured)  # type: ignore[arg-type]
