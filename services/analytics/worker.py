"""The analytics worker: every event, recorded once (see recorder for the rules)."""

from __future__ import annotations

from collections.abc import Callable

from libs.common.events import SUBSCRIPTIONS, Envelope, EventType, Service
from services.analytics.recorder import record

SERVICE = Service.ANALYTICS


def handle_event(envelope: Envelope) -> None:
    record(envelope)


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    event_type: handle_event for event_type, services in SUBSCRIPTIONS.items() if SERVICE in services
}


def startup() -> None:
    """Nothing to prepare: the schema belongs to migrations, the engine is created on first use."""
