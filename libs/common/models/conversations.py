"""Tables owned by the processor: chat sessions and the turns (exchanges) within them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class ChatSession(Base):
    __tablename__ = "chat_sessions"
    __table_args__ = (Index("ix_chat_sessions_user_active", "user_id", "ended_at"),)

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
    session_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # question | pattern | command
    question_enc: Mapped[str] = mapped_column(Text)
    answer_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    answerer: Mapped[str | None] = mapped_column(String(32), nullable=True)
    citations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # received -> searching -> answered | failed
    status: Mapped[str] = mapped_column(String(16), default="received")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
