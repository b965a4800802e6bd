"""The analytics worker: every event, recorded once (see recorder for the rules).

The bus delivers analytics' copies in batches: BATCH_HANDLER records a whole batch in one transaction.
HANDLERS take single events (a direct task, or a bus without batch support).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from libs.common import bus
from libs.common.events import SUBSCRIPTIONS, Envelope, EventType, Service
from services.analytics.recorder import record, record_batch

SERVICE = Service.ANALYTICS

log = logging.getLogger(__name__)


def handle_event(envelope: Envelope) -> None:
    record(envelope)


def handle_batch(envelopes: list[Envelope]) -> None:
    """Record a batch at once. If that fails for a reason retrying cannot fix (a malformed event, a
    bug), record its events one by one so that only the faulty ones are lost, as without batching."""
    try:
        record_batch(envelopes)
        return
    except Exception as exc:
        if bus.is_transient(exc):
            raise  # the bus retries the batch; what was committed before dedupes
        log.warning("recording a batch of %d events failed (%s); recording them one by one",
                    len(envelopes), type(exc).__name__)
    for envelope in envelopes:
        try:
            record(envelope)
        except Exception as exc:
            if bus.is_transient(exc):
                raise
            log.exception("could not record %s event %s of %s", envelope.type.value, envelope.id,
                          envelope.correlation_id)


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    event_type: handle_event for event_type, services in SUBSCRIPTIONS.items() if SERVICE in services
}
BATCH_HANDLER: Callable[[list[Envelope]], None] = handle_batch


def startup() -> None:
    """Nothing to prepare: the schema belongs to migrations, the engine is created on first use."""
