"""The user's data rights from the chat: /export (a readable copy) and /delete (erasure)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, insert, select

from libs.common.db import utcnow
from libs.common.security import decrypt
from services.processor import texts
from services.processor.tables import ERASURES, SESSIONS, TURNS

DELETE_ACTION = "delete"
DELETE_WINDOW = timedelta(minutes=5)  # how long "YES DELETE" is accepted after /delete
# Kinds that hold something the user wrote (a notice turn keeps no text: we did not process it).
_EXPORTED_KINDS = ("question", "pattern", "command")


@dataclass(frozen=True)
class Receipt:
    """What an erasure removed (counts only: it holds nothing about the user)."""

    sessions: int
    turns: int


_EXPORT_SESSIONS = (
    select(SESSIONS.c.id, SESSIONS.c.created_at, SESSIONS.c.ended_at, SESSIONS.c.end_reason, SESSIONS.c.repos)
    .where(SESSIONS.c.user_id == bindparam("uid"))
    .order_by(SESSIONS.c.created_at, SESSIONS.c.id)
)
_EXPORT_TURNS = (
    select(
        TURNS.c.session_id, TURNS.c.created_at, TURNS.c.kind, TURNS.c.question_enc, TURNS.c.answer_enc,
        TURNS.c.status,
    )
    .where(
        TURNS.c.user_id == bindparam("uid"), TURNS.c.kind.in_(_EXPORTED_KINDS), TURNS.c.session_id.is_not(None)
    )
    .order_by(TURNS.c.created_at, TURNS.c.correlation_id)
)
_DELETE_TURNS = delete(TURNS).where(TURNS.c.user_id == bindparam("uid"))
_DELETE_SESSIONS = delete(SESSIONS).where(SESSIONS.c.user_id == bindparam("uid"))
_RECEIPT = select(ERASURES.c.sessions, ERASURES.c.turns).where(ERASURES.c.correlation_id == bindparam("cid"))


def export(conn: Connection, user_id: str, now: datetime | None = None) -> str:
    """Every session of the user with its dates and scope, and every message of theirs with the
    answers, decrypted; nothing of anyone else."""
    now = now or utcnow()
    chats = conn.execute(_EXPORT_SESSIONS, {"uid": user_id}).all()
    by_session: dict[str, list[texts.ExportTurn]] = defaultdict(list)
    for session_id, created_at, kind, question_enc, answer_enc, status in conn.execute(_EXPORT_TURNS, {"uid": user_id}):
        by_session[session_id].append(
            texts.ExportTurn(
                at=created_at,
                kind=kind,
                question=decrypt(question_enc),
                # A command's reply is repotalk's own text (and an /export reply would nest exports).
                answer=decrypt(answer_enc) if answer_enc is not None and kind != "command" else None,
                status=status,
            )
        )
    sessions = [
        texts.ExportSession(
            started=created_at,
            ended=ended_at,
            end_reason=end_reason,
            scope=list(repos or []),
            turns=by_session.get(chat_id, []),
        )
        for chat_id, created_at, ended_at, end_reason, repos in chats
    ]
    return texts.export_text(sessions, now)


def erase(conn: Connection, user_id: str, correlation_id: str, now: datetime | None = None) -> Receipt:
    """Delete every session and turn of the user and leave a receipt keyed by the confirming message
    (it holds nothing about the user). The receipt's primary key makes a concurrent duplicate of the
    confirmation lose with a unique violation."""
    turn_count = conn.execute(_DELETE_TURNS, {"uid": user_id}).rowcount
    session_count = conn.execute(_DELETE_SESSIONS, {"uid": user_id}).rowcount
    receipt = Receipt(sessions=max(session_count, 0), turns=max(turn_count, 0))
    conn.execute(
        insert(ERASURES),
        {
            "correlation_id": correlation_id,
            "sessions": receipt.sessions,
            "turns": receipt.turns,
            "erased_at": now or utcnow(),
        },
    )
    return receipt


def receipt(conn: Connection, correlation_id: str) -> Receipt | None:
    row = conn.execute(_RECEIPT, {"cid": correlation_id}).first()
    return Receipt(sessions=row[0], turns=row[1]) if row is not None else None


def erased_reply(receipt: Receipt) -> str:
    return texts.delete_done(receipt.sessions, receipt.turns)
