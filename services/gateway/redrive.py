"""Re-drive turns that went quiet: an accepted message with no reply long after its event was published.

The outbox makes publication durable, but once an event is in Redis it lives only there: a Redis
restart without persistence (or a failover that lost the last writes) drops queued and unacknowledged
tasks, and the turn would never be answered. Every consumer is idempotent and re-publishes what it
published before under the same event ids, so publishing the message's first event again resumes the
turn where it stopped, and never produces a second reply (the sender sends each chunk once).

The outbox row is simply marked pending again; the relay publishes it as usual. Each sweep looks only
at rows whose publication crossed the threshold since the previous sweep, so its cost follows the
message rate, not the size of the outbox.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, exists, select, update

from libs.common.events import EventType
from services.gateway.sql import OUTBOUND, OUTBOX

log = logging.getLogger(__name__)

# The events that start a turn (or answer it at once, as the rate-limit notice does): publishing one
# again drives the whole turn through the idempotent consumers.
TURN_EVENTS = (EventType.MESSAGE_RECEIVED.value, EventType.REPLY_READY.value)

_REDRIVE = (
    update(OUTBOX)
    .where(OUTBOX.c.published_at > bindparam("since"))
    .where(OUTBOX.c.published_at <= bindparam("until"))
    .where(OUTBOX.c.created_at > bindparam("oldest"))
    .where(OUTBOX.c.event_type.in_(TURN_EVENTS))
    .where(~exists(select(OUTBOUND.c.id).where(OUTBOUND.c.correlation_id == OUTBOX.c.correlation_id)))
    .values(published_at=None, next_attempt_at=None, last_error="re-driven: no reply yet")
)


def redrive_unanswered(conn: Connection, since: datetime, now: datetime, after: timedelta,
                       max_age: timedelta) -> int:
    """Mark pending again the turn events published in (since, now - after] that have no reply yet;
    returns how many (the relay publishes them on its next pass)."""
    until = now - after
    if until <= since:
        return 0
    result = conn.execute(_REDRIVE, {"since": since, "until": until, "oldest": now - max_age})
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        log.warning("re-driving %d turn(s) with no reply %.0f s after their event was published",
                    count, after.total_seconds())
    return count


class RedriveSchedule:
    """When the relay thread should sweep, and from where: a watermark so each row is examined once
    per time it crosses the threshold. A new process starts from ``max_age`` back (turns that a
    previous process or replica left behind)."""

    def __init__(self, after: float, max_age: float) -> None:
        self.after = timedelta(seconds=after)
        self.max_age = timedelta(seconds=max_age)
        self.every = min(30.0, max(0.5, after / 4))
        self._since: datetime | None = None

    def sweep(self, conn: Connection, now: datetime) -> int:
        since = self._since if self._since is not None else now - self.max_age
        count = redrive_unanswered(conn, since, now, self.after, self.max_age)
        self._since = max(since, now - self.after)
        return count
