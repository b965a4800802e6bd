"""Forgetting a user: everything the gateway holds about them, address included."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from libs.common import db
from services.gateway.sql import INBOUND, OUTBOUND, OUTBOX, USERS


@dataclass(frozen=True)
class Erased:
    users: int
    inbound: int
    outbound: int
    outbox: int


def erase_user(user_id: str) -> Erased:
    """Delete the user's row, inbound and outbound messages and published outbox rows, in one transaction.

    Outbox rows not yet published are kept: they still have to go out (and are encrypted).
    """
    with db.session_scope() as session:
        counts = []
        for stmt in (
            delete(OUTBOUND).where(OUTBOUND.c.user_id == user_id),
            delete(INBOUND).where(INBOUND.c.user_id == user_id),
            delete(OUTBOX)
            .where(OUTBOX.c.user_id == user_id)
            .where(OUTBOX.c.published_at.is_not(None)),
            delete(USERS).where(USERS.c.id == user_id),
        ):
            counts.append(int(getattr(session.execute(stmt), "rowcount", 0) or 0))
    outbound, inbound, outbox, users = counts
    return Erased(users=users, inbound=inbound, outbound=outbound, outbox=outbox)
