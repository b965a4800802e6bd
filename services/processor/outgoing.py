"""The events the processor publishes, with deterministic ids: handling the same inbound event twice
publishes the same event twice, which the consumers dedupe (the gateway per correlation_id + chunk,
analytics per event id). A turn gets exactly one reply.ready id, whatever produced it."""

from __future__ import annotations

from libs.common.events import Envelope, EventType, ReplyKind, ReplyReady, SearchRequested, Service, derived_id
from services.processor import texts

SOURCE = Service.PROCESSOR.value


def reply(
    correlation_id: str, user_id: str, body: str, kind: ReplyKind, erase_user_after: bool = False
) -> Envelope:
    payload = ReplyReady(user_id=user_id, body=body, kind=kind, erase_user_after=erase_user_after)
    return Envelope.new(
        payload, correlation_id, source=SOURCE, event_id=derived_id(correlation_id, EventType.REPLY_READY)
    )


def apology(correlation_id: str, user_id: str) -> Envelope:
    """A failed turn's reply (the message.failed handler's, and a re-driven failed turn's)."""
    return reply(correlation_id, user_id, texts.APOLOGY, "error")


def search(correlation_id: str, request: SearchRequested) -> Envelope:
    return Envelope.new(
        request, correlation_id, source=SOURCE, event_id=derived_id(correlation_id, EventType.SEARCH_REQUESTED)
    )
