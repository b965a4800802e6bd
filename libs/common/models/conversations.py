"""Tables owned by the processor: chat sessions, the turns (exchanges) within them, and erasure receipts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class ChatSession(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (
        # At most one active session per user, enforced by the database itself: two messages of the
        # same user processed at once race to insert, and the loser retries with the winner's session.
        Index(
            "uq_chat_sessions_user_active",
            "user_id",
            unique=True,
            sqlite_where=text("ended_at IS NULL"),
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index("ix_chat_sessions_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    repos: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every repository
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)  # reset | expired
    # A command waiting for the user's confirmation (e.g. /delete) and until when it is valid.
    pending_action: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pending_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Turn(Base):
    """One inbound message and what repotalk answered; keyed by the MessageSid (idempotent)."""

    __tablename__ = "turns"
    __table_args__ = (
        Index("ix_turns_session_created", "session_id", "created_at"),
        Index("ix_turns_user_created", "user_id", "created_at"),
    )

    correlation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # None only for a message that failed before it joined a session (kept so it is apologised for once).
    session_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # question | pattern | command | notice
    question_enc: Mapped[str] = mapped_column(Text)
    answer_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    answerer: Mapped[str | None] = mapped_column(String(32), nullable=True)
    citations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The search.requested payload this turn published (encrypted: it quotes the question and the
    # history), re-published verbatim when message.received is delivered again.
    request_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    # received -> searching -> answered | failed
    status: Mapped[str] = mapped_column(String(16), default="received")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Erasure(Base):
    """Receipt of a confirmed /delete, keyed by the confirming MessageSid and holding nothing about the
    user: a redelivered confirmation re-sends the same reply instead of starting a new conversation."""

    __tablename__ = "erasures"

    correlation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
