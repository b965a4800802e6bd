"""Tables owned by analytics: every event seen, one metrics row per turn, one row per search.

No phone numbers, message bodies or query texts: the user id (a keyed hash) is the only personal
datum, kept on the turn row and cleared when the user is erased.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class AnalyticsEvent(Base):
    """Every event analytics has seen; the unique event id makes each handler run count once."""

    __tablename__ = "analytics_events"
    __table_args__ = (Index("ix_analytics_events_type_occurred", "type", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(32), default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TurnMetrics(Base):
    """One inbound message and what happened to it, keyed by its MessageSid (the correlation id).

    Filled in by events in any order: timestamps keep the earliest (first_sent_at) or latest
    (last_sent_at) value, and status and durations are recomputed from the row on every change.
    """

    __tablename__ = "analytics_turns"
    __table_args__ = (
        Index("ix_analytics_turns_started", "started_at"),
        Index("ix_analytics_turns_user", "user_id"),
    )

    correlation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The webhook time when known (message.received), else the earliest event of the turn seen.
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # answered | failed | rate_limited | command | pending
    status: Mapped[str] = mapped_column(String(16), default="pending")

    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    search_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    search_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ai_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reply_ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    reply_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rate_limited: Mapped[bool] = mapped_column(Boolean, default=False)
    chunks_sent: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int | None] = mapped_column(Integer, nullable=True)

    search_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    search_kinds: Mapped[str | None] = mapped_column(String(64), nullable=True)  # comma-separated rankers
    hit_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    search_took_ms: Mapped[float | None] = mapped_column(Float, nullable=True)

    answerer: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    ai_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    fallback_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ai_retries: Mapped[int] = mapped_column(Integer, default=0)  # calls repeated on one provider
    ai_fallbacks: Mapped[int] = mapped_column(Integer, default=0)  # providers given up before the answer

    # The earliest failure of the turn (message.failed, or an undelivered chunk).
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    error_stage: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    # Durations in milliseconds, derived from the timestamps above once both ends are known.
    e2e_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # webhook -> last chunk sent
    queue_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # webhook -> search requested
    search_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # search requested -> completed
    ai_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # search completed -> ai.response
    persist_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # ai.response -> reply ready
    send_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # reply ready -> last chunk sent


class SearchQuery(Base):
    """One completed search (no query text, no user id)."""

    __tablename__ = "analytics_searches"
    __table_args__ = (Index("ix_analytics_searches_occurred", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    kinds: Mapped[str] = mapped_column(String(64), default="")  # comma-separated rankers
    repo_count: Mapped[int] = mapped_column(Integer, default=0)  # 0: every repository
    result_count: Mapped[int] = mapped_column(Integer, default=0)
    took_ms: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ErasedUser(Base):
    """Users who asked to be erased, as a hash of their id: an event that arrives after the erasure
    (redelivered, out of order) must not bring the id back."""

    __tablename__ = "analytics_erased_users"

    user_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
