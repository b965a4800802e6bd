"""The event bus over Celery: publish() fans an envelope out to its subscribers' queues; workers
turn each queue's tasks back into envelopes for a service's handlers.

Delivery is at least once (acks late, reject on worker loss, prefetch 1): handlers are idempotent.
"""

from __future__ import annotations

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

from libs.common.events import Envelope, EventType, MessageFailed, Service, subscribers, task_name
from libs.common.settings import Settings, get_settings

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], None]

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
    """Forget the process's Celery app (tests switch brokers between cases)."""
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


def publish(envelope: Envelope, app: Celery | None = None) -> None:
    """Send one task per subscriber of the envelope's type. Raises if the broker is unreachable,
    so callers that must not lose the event (the gateway) keep it in the outbox until it goes out."""
    if _capture is not None:
        _capture.append(envelope)
        return
    app = app or get_celery()
    body = envelope.to_json()
    retry_policy = {
        "max_retries": 2,
        "interval_start": 0.05,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
    targets = subscribers(envelope.type)
    with app.producer_or_acquire() as producer:
        for service in targets:
            app.send_task(
                task_name(service),
                args=[body],
                queue=service.value,
                producer=producer,
                retry=True,
                retry_policy=retry_policy,
                ignore_result=True,
            )


def register_service(app: Celery, service: Service, handlers: Mapping[EventType, Handler]) -> Task:
    """Register the Celery task that feeds a service's queue into its handlers."""

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
        try:
            handler(envelope)
        except Exception as exc:
            if is_transient(exc) and self.request.retries < MAX_TRANSIENT_RETRIES:
                delay = min(30.0, 0.5 * 2**self.request.retries) * (0.5 + random.random())
                log.warning(
                    "transient failure handling %s for %s (attempt %d): %s; retrying in %.1fs",
                    envelope.type.value, envelope.correlation_id, self.request.retries + 1,
                    type(exc).__name__, delay,
                )
                raise self.retry(exc=exc, countdown=delay) from exc
            log.exception(
                "handler for %s failed on %s (correlation %s)",
                envelope.type.value, service.value, envelope.correlation_id,
            )
            if envelope.type is not EventType.MESSAGE_FAILED:
                report_failure(envelope, service, exc)

    return handle


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
