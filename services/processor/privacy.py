"""The user's data rights from the chat: /export (a readable copy) and /delete (erasure)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from libs.common.db import utcnow
from libs.common.models.conversations import ChatSession, Erasure, Turn
from services.processor import texts, turns

DELETE_ACTION = "delete"
DELETE_WINDOW = timedelta(minutes=5)  # how long "YES DELETE" is accepted after /delete
# Kinds that hold something the user wrote (a notice turn keeps no text: we did not process it).
_EXPORTED_KINDS = ("question", "pattern", "command")


def export(db: Session, user_id: str, now: datetime | None = None) -> str:
    """Every session of the user with its dates and scope, and every message of theirs with the
    answers, decrypted; nothing of anyone else."""
    now = now or utcnow()
    chats = db.scalars(
        select(ChatSession).where(ChatSession.user_id == user_id).order_by(ChatSession.created_at, ChatSession.id)
    ).all()
    rows = db.scalars(
        select(Turn)
        .where(Turn.user_id == user_id, Turn.kind.in_(_EXPORTED_KINDS), Turn.session_id.is_not(None))
        .order_by(Turn.created_at, Turn.correlation_id)
    ).all()
    by_session: dict[str, list[texts.ExportTurn]] = defaultdict(list)
    for turn in rows:
        assert turn.session_id is not None
        by_session[turn.session_id].append(
            texts.ExportTurn(
                at=turn.created_at,
                kind=turn.kind,
                question=turns.question_text(turn),
                # A command's reply is repotalk's own text (and an /export reply would nest exports).
                answer=turns.answer_text(turn) if turn.kind != "command" else None,
                status=turn.status,
            )
        )
    sessions = [
        texts.ExportSession(
            started=chat.created_at,
            ended=chat.ended_at,
            end_reason=chat.end_reason,
            scope=list(chat.repos or []),
            turns=by_session.get(chat.id, []),
        )
        for chat in chats
    ]
    return texts.export_text(sessions, now)


def erase(db: Session, user_id: str, correlation_id: str, now: datetime | None = None) -> Erasure:
    """Delete every session and turn of the user and leave a receipt keyed by the confirming message
    (it holds nothing about the user). The receipt's primary key makes a concurrent duplicate of the
    confirmation lose with a unique violation."""
    db.flush()
    turn_result = db.execute(delete(Turn).where(Turn.user_id == user_id).execution_options(synchronize_session=False))
    session_result = db.execute(
        delete(ChatSession).where(ChatSession.user_id == user_id).execution_options(synchronize_session=False)
    )
    # The rows behind any loaded objects are gone: forget them so nothing tries to update them.
    db.expunge_all()
    receipt = Erasure(
        correlation_id=correlation_id,
        sessions=int(getattr(session_result, "rowcount", 0) or 0),
        turns=int(getattr(turn_result, "rowcount", 0) or 0),
        erased_at=now or utcnow(),
    )
    db.add(receipt)
    db.flush()
    return receipt


def receipt(db: Session, correlation_id: str) -> Erasure | None:
    return db.get(Erasure, correlation_id)


def erased_reply(receipt: Erasure) -> str:
    return texts.delete_done(receipt.sessions, receipt.turns)
