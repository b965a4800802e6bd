"""Loaded by every process bench/tracing_in_run starts (its directory is put on PYTHONPATH): in a Celery worker,
each bus event's handler is timed in thread CPU, kept apart by whether the task's traceparent is sampled, and so is
the span export thread's work; the totals are written as JSON at exit to $REPOTALK_SPAN_PROBE_DIR.

With $REPOTALK_SPAN_PROBE_CALLS set, the tracing calls a turn makes (a span's start and end, a context's attach and
detach, reading and writing a traceparent, a latency observation with its exemplar) are timed one by one as well,
with what a pair of thread-CPU reads costs in this process, so the bench can take the probe's own share out."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_OUT = os.environ.get("REPOTALK_SPAN_PROBE_DIR", "")
_totals: dict[str, list[float]] = {}  # kind -> [calls, thread CPU seconds]


def _add(kind: str, seconds: float) -> None:
    found = _totals.setdefault(kind, [0, 0.0])
    found[0] += 1
    found[1] += seconds


def _timed(kind: str, function: Any) -> Any:
    """``function``, adding each call's thread CPU to ``kind``."""
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _add(kind, time.thread_time() - started)
    return call


def _when(ready: Callable[[], bool]) -> bool:
    """Wait (up to a minute) for the worker to reach what ``ready`` looks for; whether it did."""
    for _ in range(1200):
        if ready():
            return True
        time.sleep(0.05)
    return False


def _wrap() -> None:
    """Wrap the bus's handler runner and the batch processor's export once the worker has imported them."""
    if not _when(lambda: hasattr(sys.modules.get("libs.common.bus"), "_run_handler")):
        return
    bus = sys.modules["libs.common.bus"]
    run_handler = {kind: _timed(kind, bus._run_handler) for kind in ("untraced", "sampled", "unsampled")}

    def timed_handler(service: Any, handlers: Any, envelope: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        parent = getattr(request, "traceparent", None)
        kind = "untraced" if not isinstance(parent, str) else (
            "sampled" if int(parent[-2:], 16) & 1 else "unsampled")
        return run_handler[kind](service, handlers, envelope, request, *args, **kwargs)

    setattr(bus, "_run_handler", timed_handler)  # noqa: B010  (a module found at run time)
    from opentelemetry.sdk._shared_internal import BatchProcessor

    BatchProcessor._export = _timed("export", BatchProcessor._export)  # type: ignore[method-assign]


def _write() -> None:
    service = sys.argv[-1]
    with open(os.path.join(_OUT, f"{service}.{os.getpid()}.json"), "w") as out:
        json.dump({"service": service, "totals": _totals}, out)


def _wrap_calls() -> None:
    """Each tracing call timed apart, once the worker has set tracing up (its tracer provider exists)."""
    if not _when(lambda: getattr(sys.modules.get("libs.common.telemetry"), "_provider", None) is not None
                 and "libs.common.metrics" in sys.modules):
        return
    from opentelemetry import context

    from libs.common import metrics, telemetry, telemetry_spans

    telemetry_spans.LeanTracer.start_span = _timed("call:span start", telemetry_spans.LeanTracer.start_span)
    telemetry_spans.LeanSpan.end = _timed("call:span end", telemetry_spans.LeanSpan.end)
    context.attach = _timed("call:context attach", context.attach)
    context.detach = _timed("call:context detach", context.detach)
    telemetry._extract = _timed("call:traceparent read", telemetry._extract)
    telemetry._carrier = _timed("call:traceparent written", telemetry._carrier)
    metrics.observe = _timed("call:latency observed", metrics.observe)
    # What timing costs by itself: a wrapped call's two thread-CPU reads.
    started = time.thread_time()
    for _ in range(10_000):
        time.thread_time()
        time.thread_time()
    _add("probe", (time.thread_time() - started) / 10_000)


if _OUT and "worker" in sys.argv:
    threading.Thread(target=_wrap, name="span-probe", daemon=True).start()
    if os.environ.get("REPOTALK_SPAN_PROBE_CALLS"):
        threading.Thread(target=_wrap_calls, name="span-probe-calls", daemon=True).start()
    atexit.register(_write)
