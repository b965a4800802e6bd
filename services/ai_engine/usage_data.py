"""The ai_engine's personal data (table ai_usage: spend per user and turn): erasure and retention."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete

from libs.common.db import session_scope
from libs.common.events import Envelope, RetentionDue, UserErased
from libs.common.retention import delete_older
from services.ai_engine.budget import USAGE

log = logging.getLogger(__name__)


def erase_user(user_id: str) -> int:
    with session_scope() as session:
        return int(getattr(session.execute(delete(USAGE).where(USAGE.c.user_id == user_id)), "rowcount", 0) or 0)


def prune(cutoff: datetime) -> int:
    removed = delete_older(USAGE, USAGE.c.created_at, cutoff)
    log.info("retention: removed %d ai_usage rows older than %s", removed, cutoff.isoformat(timespec="seconds"))
    return removed


def handle_user_erased(envelope: Envelope) -> None:
    erased = envelope.data()
    assert isinstance(erased, UserErased)
    erase_user(erased.user_id)


def handle_retention_due(envelope: Envelope) -> None:
    due = envelope.data()
    assert isinstance(due, RetentionDue)
    prune(due.cutoff)
