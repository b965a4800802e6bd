"""The processor's part of the retention job: conversations, their messages and erasure receipts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from libs.common.events import Envelope, RetentionDue
from libs.common.retention import delete_older
from services.processor.tables import ERASURES, SESSIONS, TURNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    turns: int
    sessions: int
    erasures: int


def prune(cutoff: datetime) -> Pruned:
    """Delete turns (questions, answers) created before ``cutoff``, sessions idle since before it, and old
    erasure receipts (they hold no personal data; only the redelivery of a confirmation needs them)."""
    pruned = Pruned(
        turns=delete_older(TURNS, TURNS.c.created_at, cutoff),
        sessions=delete_older(SESSIONS, SESSIONS.c.last_activity_at, cutoff),
        erasures=delete_older(ERASURES, ERASURES.c.erased_at, cutoff),
    )
    log.info("retention: removed %d turns, %d sessions and %d erasure receipts older than %s",
             pruned.turns, pruned.sessions, pruned.erasures, cutoff.isoformat(timespec="seconds"))
    return pruned


def handle_retention_due(envelope: Envelope) -> None:
    due = envelope.data()
    assert isinstance(due, RetentionDue)
    prune(due.cutoff)
