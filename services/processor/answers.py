"""ai.response: persist the answer of a question (once) and hand the reply to the gateway."""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from libs.common.db import utcnow
from libs.common.events import AIResponse, Envelope
from services.processor import outgoing, texts, turns, tx, writes

log = logging.getLogger(__name__)


def handle(envelope: Envelope) -> list[Envelope]:
    """Handle one ai.response; returns the reply.ready to publish (the same one on every delivery)."""
    response = envelope.data()
    if not isinstance(response, AIResponse):
        raise TypeError(f"expected ai.response, got {envelope.type}")
    correlation_id = envelope.correlation_id
    return tx.retrying(lambda conn: _handle(conn, correlation_id, response), "ai.response", correlation_id)


def _handle(conn: Connection, correlation_id: str, response: AIResponse) -> list[Envelope]:
    now = utcnow()
    # An empty answer would reach the user as silence; say so instead (and keep it, so history is honest).
    answer = response.answer if response.answer.strip() else texts.EMPTY_ANSWER
    # The usual case is one statement (the conditional UPDATE, which returns the turn's owner, with the
    # session's touch). Only a redelivered or late answer reads the turn.
    recorded = writes.answer(conn, correlation_id, answer, response.answerer, response.citations, now)
    if recorded is not None:
        log.info(
            "answered %s for %s (%s, %d chars, %d citations)",
            correlation_id, recorded.user_id, response.answerer, len(answer), len(response.citations),
        )
        return [outgoing.reply(correlation_id, recorded.user_id, answer, "answer")]
    turn = turns.get(conn, correlation_id)
    if turn is None:
        # The user erased their data while the answer was being composed, or the turn never existed.
        log.warning("ai.response %s has no turn (erased or unknown): dropped", correlation_id)
        return []
    if turn.status == turns.ANSWERED:
        log.info("ai.response %s: turn already answered, re-publishing the same reply", correlation_id)
        body = turns.answer_text(turn) or texts.EMPTY_ANSWER
    else:
        # Failed earlier and the user got the apology under this turn's only reply id.
        log.info("ai.response %s arrived for a %s turn: not sent", correlation_id, turn.status)
        return []
    return [outgoing.reply(correlation_id, turn.user_id, body, "answer")]
