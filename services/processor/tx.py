"""Transactions that lose a race are retried from the start.

Every decision the processor takes (does this turn exist, which session is active, is it answered)
is protected by a unique key or a conditional UPDATE rather than by locks, so it behaves the same
on Postgres and SQLite. The losing transaction rolls back and runs again, and then sees the winner's
committed state (a redelivery, an existing session, an answered turn).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from libs.common.db import is_unique_violation, session_scope
from services.processor.sessions import Conflict

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5


class RetriesExhausted(RuntimeError):
    """The same transaction kept losing races; the bus reports it and the user gets an apology."""


def retrying(work: Callable[[Session], T], what: str, correlation_id: str) -> T:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with session_scope() as db:
                return work(db)
        except IntegrityError as exc:
            if not is_unique_violation(exc):
                raise
            log.info("%s for %s lost a race (attempt %d); retrying", what, correlation_id, attempt)
        except Conflict:
            log.info("%s for %s saw a concurrent change (attempt %d); retrying", what, correlation_id, attempt)
    raise RetriesExhausted(f"{what} for {correlation_id} conflicted {MAX_ATTEMPTS} times")
