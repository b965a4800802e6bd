"""Optional redaction of message bodies at Twilio (TWILIO_REDACT_BODIES).

Twilio keeps every message's body in its logs. With redaction on, the gateway blanks it there
(``client.messages(sid).update(body="")``, Twilio's documented redaction) as soon as Twilio no longer
needs it: an inbound message once it is stored here, a reply once Twilio reports a final status.
The request is queued in the outbox in the same transaction as the state that makes it due, so it
survives a crash, and carried out by the gateway worker (redaction.due), off the webhook's path.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Literal

from sqlalchemy import Connection
from twilio.base.exceptions import TwilioException

from libs.common.events import Envelope, EventType, RedactionDue, Service, derived_id
from libs.common.settings import Settings, get_settings
from services.gateway.channels import twilio_client
from services.gateway.outbox import add_to_outbox

log = logging.getLogger(__name__)

# Twilio redacts a body only once the message has reached a final status.
FINAL_STATUSES = frozenset({"delivered", "read", "undelivered", "failed"})
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.5

Direction = Literal["inbound", "outbound"]


def enabled(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    # The sandbox channel sends nothing through Twilio: nothing to redact there.
    return settings.privacy.redact_at_twilio and not settings.twilio.sandbox


def queue_redaction(conn: Connection, message_sid: str, direction: Direction, correlation_id: str,
                    key: str = "") -> None:
    """Queue the redaction of ``message_sid`` in the caller's transaction (when redaction is on)."""
    event = Envelope.new(
        RedactionDue(message_sid=message_sid, direction=direction),
        correlation_id=correlation_id,
        source=Service.GATEWAY.value,
        # One per message and status: a redelivered callback re-queues nothing new.
        event_id=derived_id(correlation_id, EventType.REDACTION_DUE, f"{message_sid}:{key}"),
    )
    add_to_outbox(conn, event, user_id=None)


def redact(message_sid: str, settings: Settings | None = None, sleep: Callable[[float], None] = time.sleep) -> str:
    """Blank the body of ``message_sid`` at Twilio; returns what happened: redacted, gone, refused or skipped.

    Never raises: a redaction that cannot be done is logged, and must not turn into a failed turn (the
    bus would report it and the processor apologise to the user)."""
    settings = settings or get_settings()
    if settings.twilio.sandbox:
        return "skipped"
    twilio = settings.twilio
    client = twilio_client(twilio.account_sid, twilio.auth_token, twilio.api_base_url)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            client.messages(message_sid).update(body="")
            log.info("redacted the body of %s at Twilio", message_sid)
            return "redacted"
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            if status == 404:
                log.info("%s is no longer at Twilio: nothing to redact", message_sid)
                return "gone"
            retryable = isinstance(status, int) and (status == 429 or status >= 500)
            if not retryable or attempt == MAX_ATTEMPTS:
                log.warning("Twilio refused to redact %s (HTTP %s, code %s)", message_sid, status,
                            getattr(exc, "code", None))
                return "refused"
        except Exception as exc:  # network errors: the next attempt may get through
            if attempt == MAX_ATTEMPTS:
                log.warning("could not reach Twilio to redact %s: %s", message_sid, type(exc).__name__)
                return "refused"
        sleep(BACKOFF_BASE * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
    return "refused"


def handle_redaction_due(envelope: Envelope) -> None:
    due = envelope.data()
    assert isinstance(due, RedactionDue)
    redact(due.message_sid)
