"""Turns: one row per inbound message (keyed by its MessageSid), with what repotalk answered.

Questions and answers are stored encrypted. State changes that a redelivered or concurrent event
could repeat (answering, failing) are conditional UPDATEs: only one of them takes effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlalchemy.orm import Session

from libs.common.db import utcnow
from libs.common.events import SearchRequested
from libs.common.models.conversations import Turn
from libs.common.security import decrypt, encrypt

RECEIVED = "received"
SEARCHING = "searching"
ANSWERED = "answered"
FAILED = "failed"
# Still waiting for an answer: the states an ai.response or message.failed may move on from.
OPEN = (RECEIVED, SEARCHING)

ReplyTurnKind = Literal["command", "notice"]


def get(db: Session, correlation_id: str) -> Turn | None:
    return db.get(Turn, correlation_id)


def add_search(
    db: Session,
    correlation_id: str,
    session_id: str,
    user_id: str,
    text: str,
    request: SearchRequested,
    now: datetime | None = None,
) -> Turn:
    """A question or /search waiting for search and answer. Flushed at once: a duplicate MessageSid
    surfaces here as a unique violation (the caller then treats the event as a redelivery)."""
    turn = Turn(
        correlation_id=correlation_id,
        session_id=session_id,
        user_id=user_id,
        kind="question" if request.mode == "question" else "pattern",
        question_enc=encrypt(text),
        request_enc=encrypt(request.model_dump_json()),
        status=SEARCHING,
        created_at=now or utcnow(),
        citations=[],
    )
    db.add(turn)
    db.flush()
    return turn


def add_replied(
    db: Session,
    correlation_id: str,
    session_id: str,
    user_id: str,
    kind: ReplyTurnKind,
    text: str,
    reply_body: str,
    now: datetime | None = None,
) -> Turn:
    """A message answered on the spot (a command or a notice); the reply is kept so that a
    redelivered message re-sends exactly the same text."""
    now = now or utcnow()
    turn = Turn(
        correlation_id=correlation_id,
        session_id=session_id,
        user_id=user_id,
        kind=kind,
        question_enc=encrypt(text),
        answer_enc=encrypt(reply_body),
        answerer="processor",
        status=ANSWERED,
        created_at=now,
        answered_at=now,
        citations=[],
    )
    db.add(turn)
    db.flush()
    return turn


def add_failed(db: Session, correlation_id: str, user_id: str, now: datetime | None = None) -> Turn:
    """A message that failed before it became a turn: remembered so that it is apologised for once and
    a late redelivery does not start it again."""
    turn = Turn(
        correlation_id=correlation_id,
        session_id=None,
        user_id=user_id,
        kind="question",
        question_enc=encrypt(""),
        status=FAILED,
        created_at=now or utcnow(),
        citations=[],
    )
    db.add(turn)
    db.flush()
    return turn


def record_answer(
    db: Session,
    correlation_id: str,
    answer: str,
    answerer: str,
    citations: Sequence[str],
    now: datetime | None = None,
) -> bool:
    """Store the answer of an open turn; False when it was already answered or failed (or is unknown)."""
    result = db.execute(
        update(Turn)
        .where(Turn.correlation_id == correlation_id, Turn.status.in_(OPEN))
        .values(
            answer_enc=encrypt(answer),
            answerer=answerer[:32],
            citations=list(citations),
            status=ANSWERED,
            answered_at=now or utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def mark_failed(db: Session, correlation_id: str) -> bool:
    """Fail an open turn; False when it was already answered or failed (or is unknown)."""
    result = db.execute(
        update(Turn)
        .where(Turn.correlation_id == correlation_id, Turn.status.in_(OPEN))
        .values(status=FAILED)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def question_text(turn: Turn) -> str:
    return decrypt(turn.question_enc)


def answer_text(turn: Turn) -> str | None:
    return decrypt(turn.answer_enc) if turn.answer_enc is not None else None


def search_request(turn: Turn) -> SearchRequested | None:
    if turn.request_enc is None:
        return None
    return SearchRequested.model_validate_json(decrypt(turn.request_enc))
