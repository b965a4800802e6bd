"""Tables that decide who may use repotalk: API keys of the admin API, admitted WhatsApp users.

Neither holds a secret or a phone number in clear: an API key is kept as the SHA-256 of the token
(the token is shown once, at creation), an admitted user as the keyed hash of the address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        # A name may be reused once its key is revoked, never twice among active keys.
        Index(
            "ux_api_keys_active_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    # The random lookup id inside the token: finds the row without comparing hashes one by one.
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the whole token
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class AllowedUser(Base):
    """A user admitted while the allow-list is on (by an invite code or `repotalk allow-list add`)."""

    __tablename__ = "allowed_users"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # keyed hash of the address
    via: Mapped[str] = mapped_column(String(16))  # invite | cli
    admitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
