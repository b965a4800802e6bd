"""The SDK's tracer provider, tracer and span, made cheaper for the spans of a traced turn.

With every turn traced, tracing cost a fifth of the stack's throughput, and most of it was span bookkeeping rather
than anything a trace shows: a span below a turn's first one went through the sampler (whose answer, for a sampled
parent, is always "sample": repotalk's sampler is ``ParentBased``), its attributes were cleaned one by one under a
lock, it was copied into a ``ReadableSpan`` as it ended, and it was made current by two generator-based context
managers nested in each other.

``LeanTracerProvider`` is the SDK's ``TracerProvider`` (resource, sampler, span processors, limits, id generator,
fork handling, shutdown) whose tracers take a shorter path when the SDK's own tracer metrics are off, the sampler is
a ``ParentBased`` one that samples what a sampled parent asks for, and a span has no links and no explicit start
time:
- a child of a sampled parent is sampled without asking the sampler (it would say so);
- a root is sampled by the sampler, as the SDK's ``start_span`` does it;
- a recording span is a ``LeanSpan``: the SDK span's fields in slots, plain attributes (non-empty str keys,
  str/int/float/bool values within the limits) kept in a plain dict without cleaning each one, which is what
  cleaning would have left, and handing itself, already immutable, to the processors as it ends; when the one
  processor is the capturing one (OTLP, as shipped), straight to it;
- ``start_as_current_span`` is a class-based context manager (and decorator) doing what ``trace.use_span`` does.
Anything else (links, a start time, children of unsampled parents, another sampler) takes the SDK's own path.
tests/libs/common/test_telemetry_spans.py runs the same spans through both providers and compares them field by
field.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any, cast

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, Tracer, TracerProvider
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_NONE: tuple[Any, ...] = ()  # events and links until a span has some (most never do)
# A sampled child's flags: sampled, plus the parent's random-trace-id bit (as the SDK's start_span sets them).
_FLAGS = {flags: TraceFlags(TraceFlags.SAMPLED | (flags & TraceFlags.RANDOM_TRACE_ID)) for flags in range(256)}


def _plain(attributes: Mapping[str, Any], limits: SpanLimits, existing: Mapping[str, Any] | None = None) -> bool:
    """Whether cleaning ``attributes`` (added to ``existing``) would keep them as they are: every key a non-empty
    str not set yet, every value a str within the length limit, an int, a float or a bool, and room for them all."""
    limit = limits.max_span_attributes
    value_limit = limits.max_span_attribute_length
    if limit is not None and len(attributes) + (len(existing) if existing else 0) > limit:
        return False
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key or (existing and key in existing) or not (
                (kind is str and (value_limit is None or len(value) <= value_limit))
                or kind is int or kind is bool or kind is float):
            return False
    return True


class LeanSpan(trace_api.Span, ReadableSpan):
    """The SDK's span, made and ended the short way (see the module's docstring): the fields its processors read,
    in slots; plain attributes in a plain dict (a ``BoundedAttributes`` only once something needs cleaning, which
    then holds what the limits leave); and, when the provider's only span processor is the capturing one (OTLP, as
    shipped), no ``on_start`` or ``_on_ending`` (both do nothing there) and ``on_end`` called on it directly,
    not through the multi-processor's loops. What a span does when asked (status, events, exceptions, links,
    renaming, calls after its end) is the SDK span's own code."""

    __slots__ = ("_attributes", "_capturing", "_context", "_end_time", "_events", "_instrumentation_info",
                 "_instrumentation_scope", "_kind", "_limits", "_links", "_lock", "_name", "_parent",
                 "_record_exception", "_resource", "_set_status_on_exception", "_span_processor", "_start_time",
                 "_status")

    def __init__(self, tracer: LeanTracer, capturing: Any, name: str, context: SpanContext,
                 parent: SpanContext | None, kind: SpanKind, attributes: Mapping[str, Any] | None,
                 record_exception: bool, set_status_on_exception: bool) -> None:
        limits = tracer._span_limits
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._end_time = None
        self._status = _UNSET
        self._resource = tracer.resource
        self._instrumentation_scope = tracer._instrumentation_scope
        self._instrumentation_info = tracer.instrumentation_info
        self._limits = limits
        self._lock = threading.Lock()
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = tracer.span_processor
        self._capturing = capturing  # the capturing processor, when it is the only one
        self._events = _NONE
        self._links = _NONE
        if not attributes:
            self._attributes: Any = {}
        elif _plain(attributes, limits):
            self._attributes = dict(attributes)  # the caller's may be shared (a statement's cached attributes)
        else:
            self._attributes = self._bounded({})
            self._attributes._set_items(attributes)
        self._start_time: int | None = None  # set as the tracer starts it

    def _bounded(self, plain: dict[str, Any]) -> BoundedAttributes:
        """The attributes as the SDK keeps them, from ones already clean."""
        limits = self._limits
        bounded = BoundedAttributes(limits.max_span_attributes, None, immutable=False,
                                    max_value_len=limits.max_span_attribute_length)
        bounded._dict.update(plain)
        return bounded

    def get_span_context(self) -> SpanContext:
        return cast(SpanContext, self._context)  # always set (ReadableSpan's allows None)

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            if self._end_time is not None:
                log.warning("Setting attribute on ended span.")
                return
            current = self._attributes
            if type(current) is dict:
                if _plain(attributes, self._limits, current):
                    current.update(attributes)
                    return
                current = self._attributes = self._bounded(current)
            current._set_items(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.set_attributes({key: value})

    # The SDK span's own, which read and write only fields this one has.
    set_status = Span.set_status
    update_name = Span.update_name
    add_event = Span.add_event
    add_link = Span.add_link
    record_exception = Span.record_exception

    def _append(self, field: str, maxlen: int | None, item: Any, caller: str) -> None:
        """An event or link added (add_event's and add_link's last step), holding the lock as the SDK's does."""
        with self._lock:
            if self._end_time is not None:
                log.warning("Tried calling %s on an ended span.", caller)
                return
            found = getattr(self, field)
            if not isinstance(found, BoundedList):  # the first one
                found = BoundedList(maxlen)
                setattr(self, field, found)
            found.append(item)

    def _add_event(self, event: Any) -> None:
        self._append("_events", self._limits.max_events, event, "_add_event")

    def _add_link(self, link: Any) -> None:
        self._append("_links", self._limits.max_links, link, "_add_link")

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        # The SDK span's (used as ``with tracer.start_span(...) as span``).
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exception=exc_val, escaped=True)  # type: ignore[misc]  # the SDK span's
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is BoundedAttributes:
                self._attributes._immutable = True
        # The span itself, not a ReadableSpan copy of it: once ended, nothing of it can change (every setter checks
        # the end time), which is all the copy was for.
        if self._capturing is not None:
            self._capturing.on_end(self)
            return
        processor: Any = self._span_processor  # typed for the SDK's Span, which this is in all but class
        processor._on_ending(self)
        processor.on_end(self)


class _CurrentSpan(contextlib.ContextDecorator):
    """``start_as_current_span``'s context manager (and decorator) as a class: ``trace.use_span`` with the span
    started on entry, the same exception handling, without two generators nested in each other."""

    __slots__ = ("_args", "_end_on_exit", "_span", "_token", "_tracer")

    def __init__(self, tracer: LeanTracer, args: tuple[Any, ...], end_on_exit: bool) -> None:
        self._tracer = tracer
        self._args = args  # start_span's, in its order: (..., record_exception, set_status_on_exception)
        self._end_on_exit = end_on_exit

    def _recreate_cm(self) -> _CurrentSpan:  # a decorated function gets a span per call
        return _CurrentSpan(self._tracer, self._args, self._end_on_exit)

    def __enter__(self) -> trace_api.Span:
        span = self._span = self._tracer.start_span(*self._args)
        self._token = context_api.attach(trace_api.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        span = self._span
        try:
            context_api.detach(self._token)
            # As use_span: Exceptions only (not GeneratorExit and the like), and only while the span records.
            if isinstance(exc, Exception) and span.is_recording():
                record_exception, set_status_on_exception = self._args[-2:]
                if record_exception:
                    span.record_exception(exc)
                if set_status_on_exception:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self._end_on_exit:
                span.end()


class LeanTracer(Tracer):
    """The SDK's tracer with a short path for the spans of a sampled turn (see the module's docstring)."""

    _lean = False  # whether the short path applies to this tracer's sampler and metrics (set by the provider)
    _seen_processors: Any = None  # the provider's span processors when _capture was last worked out
    _capture: Any = None  # the capturing one of them, when it is the only one

    def _capturing(self) -> Any:
        """The capturing span processor, when it is the provider's only one (else None): a span can skip the rest.
        Adding a processor replaces the provider's tuple of them, so this is worked out again only then."""
        processors = getattr(self.span_processor, "_span_processors", None)
        if processors is not self._seen_processors:
            self._capture = (processors[0] if processors and len(processors) == 1
                             and getattr(processors[0], "takes_lean_spans_directly", False) else None)
            self._seen_processors = processors
        return self._capture

    def _lean_applies(self) -> bool:
        sampler = self.sampler
        return (isinstance(sampler, ParentBased)
                and sampler._remote_parent_sampled is ALWAYS_ON and sampler._local_parent_sampled is ALWAYS_ON
                and isinstance(self._tracer_metrics, NoOpTracerMetrics))

    def start_span(self, name: str, context: context_api.Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Any = None, links: Sequence[trace_api.Link] | None = (), start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> trace_api.Span:
        if self._lean and not links and start_time is None and self._tracer_config.is_enabled:
            parent: Any = trace_api.get_current_span(context).get_span_context()
            ids = self.id_generator
            if type(parent) is SpanContext and parent.is_valid:
                if parent.trace_flags & TraceFlags.SAMPLED:
                    # ParentBased samples what a sampled parent asks for (the sampler is not asked: it would say so).
                    span_context = SpanContext(parent.trace_id, ids.generate_span_id(), False,
                                               _FLAGS[parent.trace_flags], parent.trace_state)
                    return self._started(LeanSpan(self, self._capturing(), name, span_context, parent, kind,
                                                  attributes, record_exception, set_status_on_exception), context)
                # An unsampled parent: the SDK's way below, to a non-recording span.
            elif parent is None or type(parent) is SpanContext:
                # A root: the sampler decides, as in the SDK's start_span.
                trace_id = ids.generate_trace_id()
                result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
                flags = TraceFlags.SAMPLED if result.decision.is_sampled() else TraceFlags.DEFAULT
                if ids.is_trace_id_random():
                    flags |= TraceFlags.RANDOM_TRACE_ID
                span_context = SpanContext(trace_id, ids.generate_span_id(), False, TraceFlags(flags),
                                           result.trace_state)
                if not result.decision.is_recording():
                    return trace_api.NonRecordingSpan(span_context)
                # A span recorded but not sampled goes to every processor, as the SDK's (the capturing one drops it).
                capturing = self._capturing() if result.decision.is_sampled() else None
                return self._started(LeanSpan(self, capturing, name, span_context, None, kind, result.attributes,
                                              record_exception, set_status_on_exception), context)
        return super().start_span(name, context, kind, attributes, links, start_time, record_exception,
                                  set_status_on_exception)

    def _started(self, span: LeanSpan, context: context_api.Context | None) -> LeanSpan:
        span._start_time = time_ns()
        if span._capturing is None:
            processor: Any = self.span_processor  # typed for the SDK's Span, which this is in all but class
            processor.on_start(span, parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: context_api.Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None, links: Sequence[trace_api.Link] | None = (), start_time: int | None = None,
        record_exception: bool = True, set_status_on_exception: bool = True, end_on_exit: bool = True,
    ) -> _CurrentSpan:
        return _CurrentSpan(self, (name, context, kind, attributes, links, start_time, record_exception,
                                   set_status_on_exception), end_on_exit)


class LeanTracerProvider(TracerProvider):
    """The SDK's tracer provider, whose tracers are ``LeanTracer``s."""

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace_api.Tracer:
        found = super().get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        if type(found) is Tracer:
            # The SDK built, configured and cached it; it becomes its subclass in place (methods and one flag read
            # off what the SDK set), so the provider's cache, resource and configurator updates keep reaching it.
            found.__class__ = LeanTracer
            lean = cast(LeanTracer, found)
            lean._lean = lean._lean_applies()
        return found
