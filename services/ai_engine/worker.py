"""The ai_engine worker: search.completed -> ai.response."""

from __future__ import annotations

import logging
from collections.abc import Callable

from libs.common import bus, metrics, telemetry
from libs.common.events import Envelope, EventType, SearchCompleted, Service, derived_id
from libs.common.settings import get_settings
from services.ai_engine import providers, usage_data
from services.ai_engine.composer import compose_response

log = logging.getLogger(__name__)

SERVICE = Service.AI_ENGINE


def handle_search_completed(envelope: Envelope) -> None:
    completed = envelope.data()
    if not isinstance(completed, SearchCompleted):
        raise bus.PermanentError(f"expected search.completed, got {envelope.type.value}")
    response = compose_response(completed, correlation_id=envelope.correlation_id)
    metrics.ANSWERS.labels(response.answerer).inc()
    telemetry.annotate(answerer=response.answerer, retries=response.retries, fallbacks=response.fallbacks,
                       input_tokens=response.input_tokens, output_tokens=response.output_tokens)
    log.info(
        "answered %s with %s in %.0f ms (%d hits, %d retries, fallback=%s)",
        envelope.correlation_id, response.answerer, response.latency_ms, len(completed.hits), response.retries,
        response.fallback_reason or "-",
    )
    # Same id on redelivery: the processor keeps one answer per turn.
    event_id = derived_id(envelope.correlation_id, EventType.AI_RESPONSE)
    bus.publish(Envelope.new(response, envelope.correlation_id, source=SERVICE.value, event_id=event_id))


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    EventType.SEARCH_COMPLETED: handle_search_completed,
    EventType.USER_ERASED: usage_data.handle_user_erased,
    EventType.RETENTION_DUE: usage_data.handle_retention_due,
}


def startup() -> None:
    """Fail fast on a malformed chain configuration; say which providers answer, in which order."""
    ai = get_settings().ai
    for warning in providers.check(ai):
        log.warning(warning)
    chain = providers.configured(ai)
    if chain:
        order = " -> ".join(f"{p.name} ({p.model})" for p in chain)
        log.info("answering with %s -> offline answerer", order)
    else:
        log.info("no AI provider configured: answering with the offline answerer")
