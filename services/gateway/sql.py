"""Dialect-aware statements and typed table handles shared by the gateway's modules.

The hot paths use Core statements on these tables (no unit-of-work overhead); both backends
support ``INSERT ... ON CONFLICT`` and ``RETURNING``.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User

USERS = cast(Table, User.__table__)
INBOUND = cast(Table, InboundMessage.__table__)
OUTBOX = cast(Table, OutboxEvent.__table__)
OUTBOUND = cast(Table, OutboundMessage.__table__)


def insert_for(session: Session, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_*`` on the session's backend."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
