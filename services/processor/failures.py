"""message.failed: a step of a turn failed for good; fail the turn and apologise, once.

The apology is the turn's only reply (its reply.ready id is derived from the correlation id), so a
redelivered failure or a second failing stage re-publishes the same event, which consumers dedupe.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from libs.common.db import utcnow
from libs.common.events import Envelope, MessageFailed, Service
from services.processor import outgoing, turns, tx

log = logging.getLogger(__name__)

# A failed send cannot be apologised for over the channel that just failed; a failure inside
# analytics is invisible to the user and says nothing about whether the turn is answered.
SILENT_STAGES = frozenset({Service.GATEWAY.value, Service.ANALYTICS.value})


def handle(envelope: Envelope) -> list[Envelope]:
    failure = envelope.data()
    if not isinstance(failure, MessageFailed):
        raise TypeError(f"expected message.failed, got {envelope.type}")
    correlation_id = envelope.correlation_id
    if failure.stage in SILENT_STAGES:
        log.info("message.failed %s at stage %s: nothing to apologise for here", correlation_id, failure.stage)
        return []
    return tx.retrying(lambda conn: _handle(conn, correlation_id, failure), "message.failed", correlation_id)


def _handle(conn: Connection, correlation_id: str, failure: MessageFailed) -> list[Envelope]:
    with tx.atomic(conn):
        return _fail(conn, correlation_id, failure)


def _fail(conn: Connection, correlation_id: str, failure: MessageFailed) -> list[Envelope]:
    failed_now = turns.mark_failed(conn, correlation_id)
    turn = turns.get(conn, correlation_id)
    if turn is None:
        if failure.user_id is None:
            log.warning("message.failed %s at %s: no turn and no user to apologise to", correlation_id, failure.stage)
            return []
        # The message failed before it became a turn (e.g. the processor could not handle it).
        turn = turns.add_failed(conn, correlation_id, failure.user_id, utcnow())
        failed_now = True
    if turn.status == turns.ANSWERED:
        log.info("message.failed %s at %s: turn already answered, no apology", correlation_id, failure.stage)
        return []
    if failed_now:
        log.info("turn %s of %s failed at %s (%s): apologising", correlation_id, turn.user_id, failure.stage,
                 failure.error_code or "no code")
    else:
        log.info("message.failed %s at %s: turn already failed, re-publishing the apology", correlation_id,
                 failure.stage)
    return [outgoing.apology(correlation_id, turn.user_id)]
