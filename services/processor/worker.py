"""The processor's worker: thin handlers that run the conversation logic and publish what it decided.

Publishing happens after the transaction committed; if it fails the task is retried, and the
redelivered event re-publishes the same events (same ids) from the committed state.
"""

from __future__ import annotations

from collections.abc import Callable

from libs.common import bus, metrics
from libs.common.events import Envelope, EventType, Service
from services.processor import answers, failures, inbound, retention

SERVICE = Service.PROCESSOR


def _publish(events: list[Envelope]) -> None:
    for event in events:
        bus.publish(event)


def on_message_received(envelope: Envelope) -> None:
    _publish(inbound.handle(envelope))


def on_ai_response(envelope: Envelope) -> None:
    _publish(answers.handle(envelope))


def on_message_failed(envelope: Envelope) -> None:
    events = failures.handle(envelope)
    stage = envelope.payload.get("stage")
    metrics.MESSAGES_FAILED.labels(stage if isinstance(stage, str) else "unknown").inc()
    _publish(events)


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    EventType.MESSAGE_RECEIVED: on_message_received,
    EventType.AI_RESPONSE: on_ai_response,
    EventType.MESSAGE_FAILED: on_message_failed,
    EventType.RETENTION_DUE: retention.handle_retention_due,
}


def startup() -> None:
    """Nothing to prepare: the engine, the broker and the connections ``tx`` keeps are made on first use
    (after any fork), and kept connections are checked per process."""
