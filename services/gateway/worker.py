"""The gateway's event consumer: reply.ready -> messages out through Twilio (or the sandbox)."""

from __future__ import annotations

from collections.abc import Callable

from libs.common import db
from libs.common.events import Envelope, EventType, Service
from services.gateway.channels import TwilioChannel, channel_for
from services.gateway.redaction import handle_redaction_due
from services.gateway.retention import handle_retention_due
from services.gateway.sender import deliver_reply

SERVICE: Service = Service.GATEWAY


def handle_reply_ready(envelope: Envelope) -> None:
    deliver_reply(envelope)


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    EventType.REPLY_READY: handle_reply_ready,
    EventType.RETENTION_DUE: handle_retention_due,
    EventType.REDACTION_DUE: handle_redaction_due,
}


def startup() -> None:
    """Open the database pool, and make the Twilio client with the SDK's lazily imported REST modules, once
    per worker process: the first reply would otherwise pay for both (imports hold the GIL, so the replies
    being sent meanwhile wait too)."""
    db.get_engine()
    channel = channel_for()
    if isinstance(channel, TwilioChannel):
        _ = channel.client.messages
