"""Turns: one row per inbound message (keyed by its MessageSid), with what repotalk answered.

Questions and answers are stored encrypted. State changes that a redelivered or concurrent event
could repeat (answering, failing) are conditional UPDATEs: only one of them takes effect.

Statements are built once (bound parameters only), so SQLAlchemy reuses their compiled form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from libs.common.db import utcnow
from libs.common.events import SearchRequested
from libs.common.security import decrypt, encrypt
from services.processor.tables import TURNS

RECEIVED = "received"
SEARCHING = "searching"
ANSWERED = "answered"
FAILED = "failed"
# Still waiting for an answer: the states an ai.response or message.failed may move on from.
OPEN = (RECEIVED, SEARCHING)

ReplyTurnKind = Literal["command", "notice"]


@dataclass(frozen=True)
class StoredTurn:
    correlation_id: str
    session_id: str | None
    user_id: str
    kind: str
    status: str
    question_enc: str
    answer_enc: str | None
    request_enc: str | None


@dataclass(frozen=True)
class Answered:
    """The turn an answer was just recorded for."""

    session_id: str | None
    user_id: str


_GET = select(
    TURNS.c.correlation_id,
    TURNS.c.session_id,
    TURNS.c.user_id,
    TURNS.c.kind,
    TURNS.c.status,
    TURNS.c.question_enc,
    TURNS.c.answer_enc,
    TURNS.c.request_enc,
).where(TURNS.c.correlation_id == bindparam("cid"))

_INSERT = insert(TURNS)

# "status IN (...)" spelled as ORs: SQLAlchemy re-renders an IN list into the SQL on every execution.
_IS_OPEN = or_(*(TURNS.c.status == status for status in OPEN))

ANSWER = (
    update(TURNS)
    .where(TURNS.c.correlation_id == bindparam("cid"), _IS_OPEN)
    .values(
        # (bind names differ from the columns': SQLAlchemy reserves those for its own SET parameters)
        answer_enc=bindparam("new_answer"),
        answerer=bindparam("new_answerer"),
        citations=bindparam("new_citations", type_=TURNS.c.citations.type),
        status=ANSWERED,
        answered_at=bindparam("new_answered_at", type_=TURNS.c.answered_at.type),
    )
    .returning(TURNS.c.session_id, TURNS.c.user_id)
)

_FAIL = (
    update(TURNS)
    .where(TURNS.c.correlation_id == bindparam("cid"), _IS_OPEN)
    .values(status=FAILED)
)


def get(conn: Connection, correlation_id: str) -> StoredTurn | None:
    row = conn.execute(_GET, {"cid": correlation_id}).first()
    return StoredTurn(*row) if row is not None else None


def add(conn: Connection, row: dict[str, Any]) -> None:
    """Insert a turn built by one of the ``*_row`` functions. A duplicate MessageSid surfaces here as a
    unique violation (the caller then treats the event as a redelivery and retries: it finds the turn)."""
    conn.execute(_INSERT, row)


def search_row(
    correlation_id: str,
    session_id: str,
    user_id: str,
    text: str,
    request: SearchRequested,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A question or /search waiting for search and answer; the request is kept (encrypted: it quotes
    the question and the history) so that a redelivered message re-publishes it verbatim."""
    return {
        "correlation_id": correlation_id,
        "session_id": session_id,
        "user_id": user_id,
        "kind": "question" if request.mode == "question" else "pattern",
        "question_enc": encrypt(text),
        "answer_enc": None,
        "answerer": None,
        "citations": [],
        "request_enc": encrypt(request.model_dump_json()),
        "status": SEARCHING,
        "created_at": now or utcnow(),
        "answered_at": None,
    }


def replied_row(
    correlation_id: str,
    session_id: str,
    user_id: str,
    kind: ReplyTurnKind,
    text: str,
    reply_body: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A message answered on the spot (a command or a notice); the reply is kept so that a
    redelivered message re-sends exactly the same text."""
    now = now or utcnow()
    return {
        "correlation_id": correlation_id,
        "session_id": session_id,
        "user_id": user_id,
        "kind": kind,
        "question_enc": encrypt(text),
        "answer_enc": encrypt(reply_body),
        "answerer": "processor",
        "citations": [],
        "request_enc": None,
        "status": ANSWERED,
        "created_at": now,
        "answered_at": now,
    }


def add_search(
    conn: Connection,
    correlation_id: str,
    session_id: str,
    user_id: str,
    text: str,
    request: SearchRequested,
    now: datetime | None = None,
) -> None:
    add(conn, search_row(correlation_id, session_id, user_id, text, request, now))


def add_replied(
    conn: Connection,
    correlation_id: str,
    session_id: str,
    user_id: str,
    kind: ReplyTurnKind,
    text: str,
    reply_body: str,
    now: datetime | None = None,
) -> None:
    add(conn, replied_row(correlation_id, session_id, user_id, kind, text, reply_body, now))


def add_failed(conn: Connection, correlation_id: str, user_id: str, now: datetime | None = None) -> StoredTurn:
    """A message that failed before it became a turn: remembered so that it is apologised for once and
    a late redelivery does not start it again."""
    turn = StoredTurn(
        correlation_id=correlation_id,
        session_id=None,
        user_id=user_id,
        kind="question",
        status=FAILED,
        question_enc=encrypt(""),
        answer_enc=None,
        request_enc=None,
    )
    add(
        conn,
        {
            "correlation_id": correlation_id,
            "session_id": None,
            "user_id": user_id,
            "kind": turn.kind,
            "question_enc": turn.question_enc,
            "answer_enc": None,
            "answerer": None,
            "citations": [],
            "request_enc": None,
            "status": FAILED,
            "created_at": now or utcnow(),
            "answered_at": None,
        },
    )
    return turn


def record_answer(
    conn: Connection,
    correlation_id: str,
    answer: str,
    answerer: str,
    citations: Sequence[str],
    now: datetime | None = None,
) -> Answered | None:
    """Store the answer of an open turn; None when it was already answered or failed (or is unknown)."""
    row = conn.execute(ANSWER, answer_params(correlation_id, encrypt(answer), answerer, citations, now)).first()
    return Answered(session_id=row[0], user_id=row[1]) if row is not None else None


def answer_params(
    correlation_id: str, answer_enc: str, answerer: str, citations: Sequence[str], now: datetime | None = None
) -> dict[str, Any]:
    """The parameters of ``ANSWER``."""
    return {
        "cid": correlation_id,
        "new_answer": answer_enc,
        "new_answerer": answerer[:32],
        "new_citations": list(citations),
        "new_answered_at": now or utcnow(),
    }


def mark_failed(conn: Connection, correlation_id: str) -> bool:
    """Fail an open turn; False when it was already answered or failed (or is unknown)."""
    result = conn.execute(_FAIL, {"cid": correlation_id})
    return result.rowcount == 1


def question_text(turn: StoredTurn) -> str:
    return decrypt(turn.question_enc)


def answer_text(turn: StoredTurn) -> str | None:
    return decrypt(turn.answer_enc) if turn.answer_enc is not None else None


def search_request(turn: StoredTurn) -> SearchRequested | None:
    if turn.request_enc is None:
        return None
    return SearchRequested.model_validate_json(decrypt(turn.request_enc))
