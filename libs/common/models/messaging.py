"""Tables owned by the gateway: users (pseudonymous), inbound messages, the outbox, outbound chunks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # keyed hash of the address
    address_enc: Mapped[str] = mapped_column(Text)  # Fernet("whatsapp:+E164")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Start of the 24-hour customer-service window: the last inbound message.
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the user was last told they were sending too fast (one note per limit window).
    rate_noticed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboundMessage(Base):
    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_user_received", "user_id", "received_at"),)

    message_sid: Mapped[str] = mapped_column(String(64), primary_key=True)  # dedupe key
    user_id: Mapped[str] = mapped_column(String(64))
    body_enc: Mapped[str] = mapped_column(Text)
    num_media: Mapped[int] = mapped_column(Integer, default=0)
    # accepted | rate_limited
    disposition: Mapped[str] = mapped_column(String(16), default="accepted")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OutboxEvent(Base):
    """Events written in the same transaction as the state they announce; a relay publishes them."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the envelope id
    event_type: Mapped[str] = mapped_column(String(32))
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    # Whose event it is (erasure removes a user's published rows); None for events about nobody.
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Fernet(JSON envelope): payloads carry message bodies, which are never stored in clear.
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Backoff after a failed publish: the relay leaves the row alone until then.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OutboundMessage(Base):
    """One chunk of one reply; (reply_id, chunk_index) makes each chunk go out exactly once.

    reply_id is the reply.ready envelope id (stable across redeliveries); one inbound message
    (correlation_id) can be answered by several replies (a notice, an answer, an apology).
    """

    __tablename__ = "outbound_messages"
    __table_args__ = (
        UniqueConstraint("reply_id", "chunk_index", name="uq_outbound_messages_chunk"),
        Index("ix_outbound_messages_user_created", "user_id", "created_at"),
        Index("ix_outbound_messages_correlation", "correlation_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reply_id: Mapped[str] = mapped_column(String(32))
    correlation_id: Mapped[str] = mapped_column(String(64))
    chunk_index: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(64))
    body_enc: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))  # twilio | sandbox
    template: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending -> sending -> accepted/queued -> sent -> delivered -> read, or failed/undelivered
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_sid: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    error_code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
