"""The event bus over Celery: publish() fans an envelope out to its subscribers' queues; workers
turn each queue's tasks back into envelopes for a service's handlers.

Delivery is at least once (acks late, reject on worker loss, prefetch 1): handlers are idempotent.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from celery import Celery, Task
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from libs.common import metrics, telemetry
from libs.common.events import (
    BATCHED_SUBSCRIBERS,
    CONCURRENT_ITEMS,
    Envelope,
    EventType,
    MessageFailed,
    Service,
    batch_task_name,
    many_task_name,
    subscribers,
    task_name,
)
from libs.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], None]
BatchHandler = Callable[[list[Envelope]], None]

# Infrastructure hiccups worth retrying: a restarting Postgres or Redis must not lose a turn.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    KombuOperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
MAX_TRANSIENT_RETRIES = 12


class PermanentError(Exception):
    """A handler failure that retrying cannot fix; the turn is answered with an apology instead."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_ERRORS)


def _transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.broker.url.startswith("memory://"):
        # The virtual transport polls; the default 1 s would add a second to every hop.
        options["polling_interval"] = 0.005
        return options
    options.update(
        visibility_timeout=settings.broker.visibility_timeout,
        unacked_restore_interval=settings.broker.restore_interval,
        unacked_restore_throttle=1,
        socket_timeout=max(settings.broker.publish_timeout, 1.0) * 5,
        socket_connect_timeout=settings.broker.publish_timeout,
        retry_on_timeout=True,
    )
    if settings.broker.key_prefix:
        options["global_keyprefix"] = settings.broker.key_prefix
    return options


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("repotalk", broker=settings.broker.url, backend=None, set_as_current=True)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options=_transport_options(settings),
        broker_pool_limit=20,
        enable_utc=True,
        task_default_queue="default",
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery()


def reset() -> None:
    """Forget the process's Celery app and batcher (tests switch brokers between cases)."""
    global _batcher
    with _batcher_lock:
        if _batcher is not None:
            _batcher.stop()
            _batcher = None
    get_celery.cache_clear()


_capture: list[Envelope] | None = None


@contextmanager
def capture_published() -> Iterator[list[Envelope]]:
    """Collect published envelopes instead of sending them (tests of a single service's handlers)."""
    global _capture
    previous, _capture = _capture, []
    try:
        yield _capture
    finally:
        _capture = previous


RETRY_POLICY = {"max_retries": 2, "interval_start": 0.05, "interval_step": 0.2, "interval_max": 0.5}


def _send(app: Celery, name: str, queue: str, args: list[Any], producer: Any = None,
          headers: dict[str, str] | None = None) -> None:
    app.send_task(
        name,
        args=args,
        queue=queue,
        producer=producer,
        headers=headers,  # the trace context (telemetry.publish_span), when tracing is on
        retry=True,
        retry_policy=RETRY_POLICY,
        ignore_result=True,
        # Celery would otherwise put repr(args) in the message headers: message bodies into anything that
        # inspects tasks, and most of the cost of a publish.
        argsrepr="<event>",
        kwargsrepr="{}",
        # Celery declares the queue on every publish by default, and kombu builds a bound copy of it each time
        # only to find it declared already: an eighth of a publish. The tasks go by the anonymous exchange straight
        # to the queue's list, which needs no declaring (the consuming worker declares its queue as it starts).
        declare=[],
    )


def publish(envelope: Envelope, app: Celery | None = None) -> None:
    """Send one task per subscriber of the envelope's type. Raises if the broker is unreachable,
    so callers that must not lose the event (the gateway) keep it in the outbox until it goes out.
    Batched subscribers (analytics) get their copy through the process's batcher instead."""
    if _capture is not None:
        _capture.append(envelope)
        return
    app = app or get_celery()
    body = envelope.to_json()
    direct = [s for s in subscribers(envelope.type) if s not in BATCHED_SUBSCRIBERS]
    held = _held.get()
    if direct:
        # Inside a holding block the tasks wait for its send (one per subscriber for the whole block).
        with nullcontext() if held is not None else app.producer_or_acquire() as producer:
            for service in direct:
                name = task_name(service)
                with telemetry.publish_span(name, service.value, envelope.type.value, envelope.id,
                                            envelope.correlation_id) as headers:
                    if held is not None:
                        held.add(service, {"event": body, "headers": headers or {}})
                    else:
                        _send(app, name, service.value, [body], producer, headers)
    for service in subscribers(envelope.type):
        if service in BATCHED_SUBSCRIBERS:
            batcher(app).add(service, body)


class _Held:
    """The tasks a ``holding`` block holds back: per subscriber, each event's body and trace headers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a batch's events may run side by side (CONCURRENT_ITEMS)
        self.items: dict[Service, list[dict[str, Any]]] = {}

    def add(self, service: Service, item: dict[str, Any]) -> None:
        with self._lock:
            self.items.setdefault(service, []).append(item)

    def send(self, app: Celery | None = None) -> None:
        """The held events, per subscriber up to HOP_BATCH_MAX to a task (``many_task_name``), an event alone as
        an ordinary task. Raises, as ``publish`` does, when the broker is unreachable."""
        if not self.items:
            return
        app = app or get_celery()
        limit = get_settings().broker.hop_batch_max
        with app.producer_or_acquire() as producer:
            for service, items in self.items.items():
                for start in range(0, len(items), limit):
                    chunk = items[start : start + limit]
                    if len(chunk) == 1:
                        _send(app, task_name(service), service.value, [chunk[0]["event"]], producer,
                              chunk[0]["headers"] or None)
                    else:
                        _send(app, many_task_name(service), service.value, [chunk], producer)


_held: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("repotalk_held_tasks", default=None)


@contextmanager
def holding() -> Iterator[_Held | None]:
    """Hold back what is published inside the block, for the caller to ``send()`` once it ends, the events for
    one subscriber together.

    Every hop of a turn costs a task's worth of broker round trips and Celery bookkeeping, far more than most
    handlers' own work; a burst (the outbox relay's pass, a batch's handlers) then pays it once per batch, and
    the batch travels on together. Yields None when publishes go out at once: with HOP_BATCH_MAX=1, and inside
    another holding block (the outer one sends them)."""
    if _held.get() is not None or get_settings().broker.hop_batch_max <= 1:
        yield None
        return
    held = _Held()
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


@contextmanager
def coalescing(app: Celery | None = None) -> Iterator[bool]:
    """``holding`` that sends as the block ends. Nothing is sent when the block raises: its caller retries the
    whole of it, and handlers are idempotent. Yields whether publishes are held."""
    with holding() as held:
        yield held is not None
    if held is not None:
        held.send(app)


class Batcher:
    """Gathers a process's copies for batched subscribers and sends them as one task every few ms.

    Analytics is not on a turn's path, so its copies may wait; a process killed with SIGKILL loses at
    most one interval of them (never a user's message: those travel as direct tasks). While the broker
    is down, batches are kept (bounded) and sent when it is back.
    """

    def __init__(self, app: Celery, interval: float, max_size: int, keep: int = 100_000) -> None:
        self.app = app
        self.interval = interval
        self.max_size = max_size
        self.keep = keep
        self.dropped = 0
        self._lock = threading.Lock()
        self._buffers: dict[Service, list[dict[str, Any]]] = {}
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="event-batcher", daemon=True)
        self._thread.start()

    def add(self, service: Service, body: dict[str, Any]) -> None:
        with self._lock:
            buffer = self._buffers.setdefault(service, [])
            buffer.append(body)
            if len(buffer) > self.keep:
                del buffer[: len(buffer) - self.keep]
                self.dropped += 1
            full = len(buffer) >= self.max_size
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._buffers.values())

    def _loop(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        for service, bodies in buffers.items():
            for start in range(0, len(bodies), self.max_size):
                chunk = bodies[start : start + self.max_size]
                try:
                    _send(self.app, batch_task_name(service), service.value, [chunk])
                except Exception as exc:
                    log.warning("could not send %d %s events (%s); keeping them", len(chunk), service.value,
                                type(exc).__name__)
                    with self._lock:
                        self._buffers.setdefault(service, [])[:0] = bodies[start:]
                    break

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()


_batcher: Batcher | None = None
_batcher_lock = threading.Lock()


def batcher(app: Celery | None = None) -> Batcher:
    global _batcher
    with _batcher_lock:
        if _batcher is None:
            settings = get_settings()
            _batcher = Batcher(app or get_celery(), settings.broker.batch_interval, settings.broker.batch_max)
            atexit.register(_batcher.stop)
        return _batcher


def flush_batches() -> None:
    """Send what the batcher holds now (shutdown, tests)."""
    if _batcher is not None:
        _batcher.flush()


def _run_handler(service: Service, handlers: Mapping[EventType, Handler], envelope: Envelope, request: Any,
                 on_error: Callable[[Exception], None], batch_size: int | None = None) -> None:
    """Run the event's handler under the consumer span its task's trace context gives (``request``: the task's
    request, or an event's own headers in a batch); a failure is handed to ``on_error`` inside that span, so
    what it publishes (a retry, message.failed) stays in the turn's trace."""
    handler = handlers.get(envelope.type)
    if handler is None:
        return
    with telemetry.consume_span(task_name(service), service.value, request, envelope.type.value, envelope.id,
                                envelope.correlation_id) as current:
        if batch_size is not None:
            telemetry.set_attributes(current, **{"repotalk.batch.size": batch_size})
        try:
            handler(envelope)
        except Exception as exc:
            telemetry.mark_error(current, type(exc).__name__)
            metrics.record_hop(service.value, envelope.type.value, envelope.occurred_at, ok=False)
            on_error(exc)
        else:
            metrics.record_hop(service.value, envelope.type.value, envelope.occurred_at, ok=True)


def register_service(
    app: Celery, service: Service, handlers: Mapping[EventType, Handler], batch_handler: BatchHandler | None = None
) -> Task:
    """Register the Celery task that feeds a service's queue into its handlers (and, for a batched
    subscriber, the task that takes lists of events: ``batch_handler`` or each event's handler in turn)."""

    @app.task(name=task_name(service), bind=True, shared=False, max_retries=MAX_TRANSIENT_RETRIES)
    def handle(self: Task, raw: dict[str, Any]) -> None:
        try:
            envelope = Envelope.from_json(raw)
        except Exception:
            log.error("dropping malformed event on %s queue", service.value)
            return
        _run_handler(service, handlers, envelope, self.request,
                     lambda exc: _retry_or_report(self, service, [envelope], exc))

    if service not in BATCHED_SUBSCRIBERS:

        @app.task(name=many_task_name(service), bind=True, shared=False, max_retries=MAX_TRANSIENT_RETRIES)
        def handle_many(self: Task, items: list[dict[str, Any]]) -> None:
            again: list[dict[str, Any]] = []  # the events to retry, when their handler failed transiently
            retrying = self.request.retries < MAX_TRANSIENT_RETRIES

            def run(item: dict[str, Any]) -> None:
                try:
                    envelope = Envelope.from_json(item["event"])
                except Exception:
                    log.error("dropping a malformed event from a %s batch", service.value)
                    return
                # Each event continues its own turn's trace with the span it would have had alone.
                request = SimpleNamespace(**(item.get("headers") or {}), id=self.request.id,
                                          retries=self.request.retries)

                def on_error(exc: Exception) -> None:
                    if retrying and is_transient(exc):
                        again.append(item)
                    else:
                        _report(service, [envelope], exc)

                _run_handler(service, handlers, envelope, request, on_error, batch_size=len(items))

            with coalescing(app):
                if service in CONCURRENT_ITEMS and len(items) > 1:
                    # Each event in a context of its own, copied here: it holds the coalescing block's buffer.
                    contexts = [contextvars.copy_context() for _ in items]
                    list(_item_pool().map(lambda pair: pair[0].run(run, pair[1]), zip(contexts, items, strict=True)))
                else:
                    for item in items:
                        run(item)
            if again:
                # The others are done: only these go round again, in one task of their own.
                delay = _retry_delay(self)
                log.warning("transient failure handling %d events of a batch on %s (attempt %d); retrying in %.1fs",
                            len(again), service.value, self.request.retries + 1, delay)
                raise self.retry(args=[again], countdown=delay)

    if service in BATCHED_SUBSCRIBERS:

        @app.task(name=batch_task_name(service), bind=True, shared=False, max_retries=MAX_TRANSIENT_RETRIES)
        def handle_batch(self: Task, raws: list[dict[str, Any]]) -> None:
            envelopes = []
            for raw in raws:
                try:
                    envelopes.append(Envelope.from_json(raw))
                except Exception:
                    log.error("dropping a malformed event from a %s batch", service.value)
            try:
                if batch_handler is not None:
                    batch_handler(envelopes)
                else:
                    for envelope in envelopes:
                        handler = handlers.get(envelope.type)
                        if handler is not None:
                            handler(envelope)
            except Exception as exc:
                _retry_or_report(self, service, envelopes, exc)
                return
            for envelope in envelopes:
                metrics.record_hop(service.value, envelope.type.value, envelope.occurred_at, ok=True)

    return handle


def _label(envelopes: list[Envelope]) -> str:
    first = envelopes[0] if envelopes else None
    return f"{first.type.value} for {first.correlation_id}" if first else "an empty batch"


def _retry_delay(task: Task) -> float:
    """Exponential backoff with jitter, by the task's retries so far."""
    return float(min(30.0, 0.5 * 2**task.request.retries) * (0.5 + random.random()))


def _retry_or_report(task: Task, service: Service, envelopes: list[Envelope], exc: Exception) -> None:
    """Retry a transient failure with backoff and jitter; report anything else as message.failed."""
    label = _label(envelopes)
    if is_transient(exc) and task.request.retries < MAX_TRANSIENT_RETRIES:
        delay = _retry_delay(task)
        log.warning("transient failure handling %s on %s (attempt %d): %s; retrying in %.1fs",
                    label, service.value, task.request.retries + 1, type(exc).__name__, delay)
        raise task.retry(exc=exc, countdown=delay) from exc
    _report(service, envelopes, exc)


def _report(service: Service, envelopes: list[Envelope], exc: Exception) -> None:
    """Log a failure that retrying cannot fix and tell each turn (message.failed: the user gets an apology)."""
    label = _label(envelopes)
    log.error("handler for %s failed on %s", label, service.value, exc_info=exc)
    if service in BATCHED_SUBSCRIBERS:
        return  # a bookkeeping subscriber's failure is not the user's turn failing
    for envelope in envelopes:
        if envelope.type is not EventType.MESSAGE_FAILED:
            report_failure(envelope, service, exc)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _item_pool() -> ThreadPoolExecutor:
    """Threads for the events of a batch that run side by side (CONCURRENT_ITEMS), shared by the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(2, get_settings().broker.hop_batch_max),
                                       thread_name_prefix="batch-event")
        return _pool


def report_failure(envelope: Envelope, service: Service, exc: BaseException) -> None:
    user_id = envelope.payload.get("user_id") if isinstance(envelope.payload, dict) else None
    failed = MessageFailed(
        user_id=user_id if isinstance(user_id, str) else None,
        stage=service.value,
        reason=type(exc).__name__ if not isinstance(exc, PermanentError) else str(exc),
    )
    try:
        publish(Envelope.new(failed, envelope.correlation_id, source=service.value))
    except Exception:
        log.exception("could not publish message.failed for %s", envelope.correlation_id)


def worker_options(settings: Settings, service: Service) -> dict[str, Any]:
    return {
        "queues": [service.value],
        "pool_cls": settings.broker.worker_pool,
        "concurrency": settings.broker.worker_concurrency,
        "hostname": f"{service.value}@%h",
        "without_heartbeat": True,
        "without_mingle": True,
        "without_gossip": True,
    }


class EmbeddedWorker:
    """A Celery worker for one or more services' queues in a thread of this process (embedded mode
    and tests). With the in-memory broker each service gets its own; over Redis one worker per
    process is what Celery supports, so tests give it every queue."""

    def __init__(self, app: Celery, *services: Service) -> None:
        self.service = services[0]
        self.app = app
        self.controller = app.WorkController(
            queues=[s.value for s in services],
            pool_cls="solo",
            concurrency=1,
            hostname=f"{self.service.value}@embedded-{id(self):x}",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="WARNING",
            ready_callback=self._on_ready,
        )
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"worker-{self.service.value}", daemon=True)

    def _on_ready(self, _consumer: object = None) -> None:
        self.ready.set()

    def _run(self) -> None:
        # Celery resolves task names through the thread-local current app.
        self.app.set_current()
        try:
            self.controller.start()
        except Exception:
            log.exception("embedded %s worker stopped", self.service.value)

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        if not self.ready.wait(timeout):
            raise RuntimeError(f"embedded {self.service.value} worker did not start")

    def stop(self) -> None:
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout=10)
