"""Table owned by ai_engine: what each answered turn cost, for the per-user daily budget.

One row per turn (the correlation id), so a redelivered search.completed never charges twice. Rows
only matter for the current UTC day and are removed after it; the user id is the keyed hash.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class AIUsage(Base):
    __tablename__ = "ai_usage"
    __table_args__ = (
        Index("ix_ai_usage_user_day", "user_id", "day"),
        Index("ix_ai_usage_day", "day"),
    )

    correlation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)  # UTC
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
