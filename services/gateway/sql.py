"""Dialect-aware statements and typed table handles shared by the gateway's modules.

The hot paths use Core statements on these tables (no unit-of-work overhead), built once per
dialect and executed with parameters: building a statement and computing its cache key costs more
CPU than running it. Both backends support ``INSERT ... ON CONFLICT`` and ``RETURNING``.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User

USERS = cast(Table, User.__table__)
INBOUND = cast(Table, InboundMessage.__table__)
OUTBOX = cast(Table, OutboxEvent.__table__)
OUTBOUND = cast(Table, OutboundMessage.__table__)


def dialect_insert(dialect: str, table: Table) -> Any:
    """An INSERT that supports ``on_conflict_do_*`` on ``dialect`` (postgresql or sqlite)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
