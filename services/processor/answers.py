"""ai.response: persist the answer of a question (once) and hand the reply to the gateway."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from libs.common.db import utcnow
from libs.common.events import AIResponse, Envelope
from services.processor import outgoing, sessions, texts, turns, tx

log = logging.getLogger(__name__)


def handle(envelope: Envelope) -> list[Envelope]:
    """Handle one ai.response; returns the reply.ready to publish (the same one on every delivery)."""
    response = envelope.data()
    if not isinstance(response, AIResponse):
        raise TypeError(f"expected ai.response, got {envelope.type}")
    correlation_id = envelope.correlation_id
    return tx.retrying(lambda db: _handle(db, correlation_id, response), "ai.response", correlation_id)


def _handle(db: Session, correlation_id: str, response: AIResponse) -> list[Envelope]:
    now = utcnow()
    # An empty answer would reach the user as silence; say so instead (and keep it, so history is honest).
    answer = response.answer if response.answer.strip() else texts.EMPTY_ANSWER
    recorded = turns.record_answer(db, correlation_id, answer, response.answerer, response.citations, now)
    turn = turns.get(db, correlation_id)
    if turn is None:
        # The user erased their data while the answer was being composed, or the turn never existed.
        log.warning("ai.response %s has no turn (erased or unknown): dropped", correlation_id)
        return []
    if recorded:
        sessions.touch(db, turn.session_id, now)
        log.info(
            "answered %s for %s (%s, %d chars, %d citations)",
            correlation_id, turn.user_id, response.answerer, len(answer), len(response.citations),
        )
        body = answer
    elif turn.status == turns.ANSWERED:
        log.info("ai.response %s: turn already answered, re-publishing the same reply", correlation_id)
        body = turns.answer_text(turn) or texts.EMPTY_ANSWER
    else:
        # Failed earlier and the user got the apology under this turn's only reply id.
        log.info("ai.response %s arrived for a %s turn: not sent", correlation_id, turn.status)
        return []
    return [outgoing.reply(correlation_id, turn.user_id, body, "answer")]
