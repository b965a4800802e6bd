"""The event bus over Celery: publish() fans an envelope out to its subscribers' queues; workers
turn each queue's tasks back into envelopes for a service's handlers.

Delivery is at least once (acks late, reject on worker loss, prefetch 1): handlers are idempotent.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from celery import Celery, Task
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from libs.common import metrics, telemetry
from libs.common.events import (
    BATCHED_SUBSCRIBERS,
    Envelope,
    EventType,
    MessageFailed,
    Service,
    batch_task_name,
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
    if direct:
        with app.producer_or_acquire() as producer:
            for service in direct:
                name = task_name(service)
                with telemetry.publish_span(name, service.value, envelope.type.value, envelope.id,
                                            envelope.correlation_id) as headers:
                    _send(app, name, service.value, [body], producer, headers)
    for service in subscribers(envelope.type):
        if service in BATCHED_SUBSCRIBERS:
            batcher(app).add(service, body)


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
        handler = handlers.get(envelope.type)
        if handler is None:
            return
        with telemetry.consume_span(self.name, service.value, self.request, envelope.type.value, envelope.id,
                                    envelope.correlation_id) as current:
            try:
                handler(envelope)
            except Exception as exc:
                telemetry.mark_error(current, type(exc).__name__)
                metrics.record_hop(service.value, envelope.type.value, envelope.occurred_at, ok=False)
                _retry_or_report(self, service, [envelope], exc)
            else:
                metrics.record_hop(service.value, envelope.type.value, envelope.occurred_at, ok=True)

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


def _retry_or_report(task: Task, service: Service, envelopes: list[Envelope], exc: Exception) -> None:
    """Retry a transient failure with backoff and jitter; report anything else as message.failed."""
    first = envelopes[0] if envelopes else None
    label = f"{first.type.value} for {first.correlation_id}" if first else "an empty batch"
    if is_transient(exc) and task.request.retries < MAX_TRANSIENT_RETRIES:
        delay = min(30.0, 0.5 * 2**task.request.retries) * (0.5 + random.random())
        log.warning("transient failure handling %s on %s (attempt %d): %s; retrying in %.1fs",
                    label, service.value, task.request.retries + 1, type(exc).__name__, delay)
        raise task.retry(exc=exc, countdown=delay) from exc
    log.exception("handler for %s failed on %s", label, service.value)
    if service in BATCHED_SUBSCRIBERS:
        return  # a bookkeeping subscriber's failure is not the user's turn failing
    for envelope in envelopes:
        if envelope.type is not EventType.MESSAGE_FAILED:
            report_failure(envelope, service, exc)


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
