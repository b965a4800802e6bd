"""Chat sessions: one active session per user, ended when idle or on /reset, carrying the repository
scope, the pending confirmation and (through its turns) the conversation history.

Concurrency: the database holds at most one active session per user (a partial unique index), and a
session is only ended by a conditional UPDATE. A transaction that loses either race raises
``Conflict`` or a unique violation; the caller retries the whole transaction (see ``tx.retrying``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from libs.common.db import utcnow
from libs.common.events import HistoryItem
from libs.common.models.conversations import ChatSession, Turn
from libs.common.security import decrypt
from libs.common.settings import get_settings
from services.processor.turns import ANSWERED

# Exchanges that make up the conversation history (commands and notices are not part of it).
EXCHANGE_KINDS = ("question", "pattern")


class Conflict(Exception):
    """Another transaction changed the same session first; retry the whole transaction."""


def idle_limit() -> timedelta:
    return timedelta(minutes=get_settings().conversation.session_idle_minutes)


def active_session(db: Session, user_id: str) -> ChatSession | None:
    return db.scalars(
        select(ChatSession).where(ChatSession.user_id == user_id, ChatSession.ended_at.is_(None))
    ).first()


def end_session(db: Session, chat: ChatSession, reason: str, now: datetime) -> None:
    """End an active session; raises Conflict when another transaction ended it first."""
    result = db.execute(
        update(ChatSession)
        .where(ChatSession.id == chat.id, ChatSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict(f"session {chat.id} was ended concurrently")
    db.refresh(chat)


def start_session(
    db: Session,
    user_id: str,
    now: datetime,
    repos: Sequence[str] = (),
    pending_action: str | None = None,
    pending_until: datetime | None = None,
) -> ChatSession:
    chat = ChatSession(
        id=uuid.uuid4().hex,
        user_id=user_id,
        repos=list(repos),
        created_at=now,
        last_activity_at=now,
        pending_action=pending_action,
        pending_until=pending_until,
    )
    db.add(chat)
    # Flush now so a concurrent insert for the same user surfaces here as a unique violation.
    db.flush()
    return chat


def current_session(db: Session, user_id: str, now: datetime | None = None) -> ChatSession:
    """The user's active session, touched; a new one when there is none or the last one went idle.

    An expired session ends with end_reason='expired'; its successor keeps the repository scope (a
    preference, not conversation) and a still-valid pending confirmation, but none of its history.
    """
    now = now or utcnow()
    chat = active_session(db, user_id)
    if chat is None:
        return start_session(db, user_id, now)
    if now - chat.last_activity_at > idle_limit():
        end_session(db, chat, "expired", now)
        pending_valid = chat.pending_until is not None and chat.pending_until > now
        return start_session(
            db,
            user_id,
            now,
            repos=chat.repos or [],
            pending_action=chat.pending_action if pending_valid else None,
            pending_until=chat.pending_until if pending_valid else None,
        )
    chat.last_activity_at = now
    return chat


def reset_session(db: Session, chat: ChatSession, now: datetime | None = None) -> ChatSession:
    """/reset: end the session and start an empty one (no history, every repository in scope)."""
    now = now or utcnow()
    end_session(db, chat, "reset", now)
    return start_session(db, chat.user_id, now)


def touch(db: Session, session_id: str | None, now: datetime | None = None) -> None:
    if session_id is None:
        return
    db.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id, ChatSession.ended_at.is_(None))
        .values(last_activity_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def set_pending(chat: ChatSession, action: str, until: datetime) -> None:
    chat.pending_action = action
    chat.pending_until = until


def clear_pending(chat: ChatSession) -> None:
    chat.pending_action = None
    chat.pending_until = None


def pending(chat: ChatSession, action: str, now: datetime) -> bool:
    """Whether ``action`` waits for confirmation and its window is still open."""
    return chat.pending_action == action and chat.pending_until is not None and now <= chat.pending_until


def history(db: Session, session_id: str, limit: int | None = None) -> list[HistoryItem]:
    """The last ``limit`` answered exchanges of a session (history_turns by default), oldest first."""
    if limit is None:
        limit = get_settings().conversation.history_turns
    if limit <= 0:
        return []
    turns = db.scalars(
        select(Turn)
        .where(Turn.session_id == session_id, Turn.status == ANSWERED, Turn.kind.in_(EXCHANGE_KINDS))
        .order_by(Turn.created_at.desc(), Turn.correlation_id.desc())
        .limit(limit)
    ).all()
    items: list[HistoryItem] = []
    for turn in reversed(turns):
        items.append(HistoryItem(role="user", text=decrypt(turn.question_enc)))
        items.append(HistoryItem(role="assistant", text=decrypt(turn.answer_enc) if turn.answer_enc else ""))
    return items
