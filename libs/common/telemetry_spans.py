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
- a recording span is a ``LeanSpan``: the SDK's ``Span`` class, its fields set directly, plain attributes
  (non-empty str keys, str/int/float/bool values within the limits) stored without cleaning each one, which is what
  cleaning would have left, and handing itself, already immutable, to the processors as it ends;
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
from opentelemetry.sdk.trace import Tracer, TracerProvider, _Span
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_NONE: tuple[Any, ...] = ()  # events and links until a span has some (most never do)
# A sampled child's flags: sampled, plus the parent's random-trace-id bit (as the SDK's start_span sets them).
_FLAGS = {flags: TraceFlags(TraceFlags.SAMPLED | (flags & TraceFlags.RANDOM_TRACE_ID)) for flags in range(256)}


def _add_plain(attributes: BoundedAttributes, new: Mapping[str, Any]) -> bool:
    """``attributes._set_items(new)`` for the common case, without cleaning each value: every key a non-empty str
    not set yet, every value a str (within the length limit), int, float or bool, and room for them all. Returns
    False, having changed nothing, for anything else, which the SDK's way then handles (with the same result in the
    common case)."""
    plain = attributes._dict
    limit = attributes.maxlen
    value_limit = attributes.max_value_len
    if limit is not None and len(plain) + len(new) > limit:
        return False
    for key, value in new.items():
        kind = type(value)
        if type(key) is not str or not key or key in plain or not (
                (kind is str and (value_limit is None or len(value) <= value_limit))
                or kind is int or kind is bool or kind is float):
            return False
    plain.update(new)
    return True


class LeanSpan(_Span):
    """The SDK's span, made and ended the short way (see the module's docstring); everything else is inherited."""

    def __init__(self, tracer: Tracer, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind,
                 attributes: Mapping[str, Any] | None, record_exception: bool, set_status_on_exception: bool) -> None:
        # The fields Span.__init__ and ReadableSpan.__init__ set, set directly.
        limits = tracer._span_limits
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope
        self._parent = parent
        self._start_time = None
        self._end_time = None
        self._resource = tracer.resource
        self._status = _UNSET
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = tracer.span_processor
        self._limits = limits
        self._lock = threading.Lock()
        self._attributes = BoundedAttributes(limits.max_span_attributes, None, immutable=False,
                                             max_value_len=limits.max_span_attribute_length)
        if attributes and not _add_plain(self._attributes, attributes):
            self._attributes._set_items(attributes)
        self._events = _NONE
        self._links = _NONE
        self._record_end_metrics = None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            if self._end_time is not None:
                log.warning("Setting attribute on ended span.")
                return
            bounded = cast(BoundedAttributes, self._attributes)  # as __init__ made it
            if not _add_plain(bounded, attributes):
                bounded._set_items(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        with self._lock:
            if self._events is _NONE:
                self._events = self._new_events()
        super().add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        with self._lock:
            if self._links is _NONE:
                self._links = self._new_links(())
        super().add_link(context, attributes)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            cast(BoundedAttributes, self._attributes)._immutable = True  # as __init__ made it
        processor = self._span_processor
        processor._on_ending(self)
        # The span itself, not a ReadableSpan copy of it: once ended, nothing of it can change (every setter
        # checks the end time), which is all the copy was for.
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
                    return self._started(LeanSpan(self, name, span_context, parent, kind, attributes,
                                                  record_exception, set_status_on_exception), context)
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
                return self._started(LeanSpan(self, name, span_context, None, kind, result.attributes,
                                              record_exception, set_status_on_exception), context)
        return super().start_span(name, context, kind, attributes, links, start_time, record_exception,
                                  set_status_on_exception)

    def _started(self, span: LeanSpan, context: context_api.Context | None) -> LeanSpan:
        span._start_time = time_ns()
        self.span_processor.on_start(span, parent_context=context)
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
