"""Twilio status callbacks: an outbound chunk's status only ever moves forward.

Order: pending < sending < accepted/queued < sent < delivered < read; failed and undelivered are
terminal. Steps can be skipped (read without delivered) and callbacks arrive out of order, so a
late 'sent' after 'delivered' changes nothing. Only a change is announced (message.status).
"""

from __future__ import annotations

from sqlalchemy import bindparam, update

from libs.common import db
from libs.common.events import Envelope, EventType, MessageStatus, Service, derived_id
from services.gateway import redaction
from services.gateway.outbox import add_to_outbox
from services.gateway.sql import OUTBOUND

# Twilio's own "sending" (between queued and sent) ranks with our claim state so it can never
# overwrite a real status nor look like a chunk this gateway is still sending.
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "sending": 1,
    "accepted": 2,
    "scheduled": 2,
    "queued": 2,
    "sent": 4,
    "delivered": 5,
    "read": 6,
}
FAILURE_STATUSES = frozenset({"failed", "undelivered", "canceled"})
# A failure can still arrive for a message Twilio had taken or sent; never after delivery.
_FAILABLE = tuple(status for status, rank in STATUS_RANK.items() if rank < STATUS_RANK["delivered"])
SENT_STATUSES = frozenset(status for status, rank in STATUS_RANK.items() if rank >= STATUS_RANK["accepted"])


def is_known_status(status: str) -> bool:
    return status in STATUS_RANK or status in FAILURE_STATUSES


def _earlier_statuses(status: str) -> tuple[str, ...]:
    if status in FAILURE_STATUSES:
        return _FAILABLE
    rank = STATUS_RANK[status]
    return tuple(name for name, other in STATUS_RANK.items() if other < rank)


_ADVANCE = (
    update(OUTBOUND)
    .where(OUTBOUND.c.provider_sid == bindparam("sid"))
    .where(OUTBOUND.c.status.in_(bindparam("earlier", expanding=True)))
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
    .returning(OUTBOUND.c.correlation_id, OUTBOUND.c.user_id)
)
_ADVANCE_WITH_ERROR = _ADVANCE.values(error_code=bindparam("code"))


def apply_status(provider_sid: str, status: str, error_code: str | None = None) -> bool:
    """Move the chunk sent as ``provider_sid`` forward to ``status``; True when something changed.

    An unknown sid or status, or a step backwards, changes nothing. A change queues message.status
    in the same transaction (no broker I/O on the callback's path).
    """
    status = status.strip().lower()
    if not provider_sid or not is_known_status(status) or status in ("pending", "sending"):
        return False
    params: dict[str, object] = {
        "sid": provider_sid, "earlier": list(_earlier_statuses(status)), "new_status": status, "now": db.utcnow(),
    }
    if error_code:
        params["code"] = error_code[:16]
    with db.get_engine().begin() as conn:
        row = conn.execute(_ADVANCE_WITH_ERROR if error_code else _ADVANCE, params).first()
        if row is None:
            return False
        correlation_id, user_id = row
        event = MessageStatus(provider_sid=provider_sid, status=status, error_code=error_code or None)
        add_to_outbox(
            conn,
            Envelope.new(
                event,
                correlation_id=correlation_id,
                source=Service.GATEWAY.value,
                event_id=derived_id(correlation_id, EventType.MESSAGE_STATUS, f"{provider_sid}:{status}"),
            ),
            user_id=user_id,
        )
        if status in redaction.FINAL_STATUSES and redaction.enabled():
            redaction.queue_redaction(conn, provider_sid, "outbound", correlation_id, key=status)
    return True
