"""The optional per-user daily budget (AI_USER_DAILY_BUDGET_USD): model spend per user and UTC day.

A turn is charged once, keyed by its correlation id: a redelivered search.completed finds its own row
and neither counts it against itself nor adds a second one. Two turns of one user answered at the
same moment may both pass the check, so the budget can be exceeded by about one answer.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from libs.common.db import session_scope, utcnow
from libs.common.models.ai_usage import AIUsage

log = logging.getLogger(__name__)

USAGE = cast(Table, AIUsage.__table__)

NOTE_BUDGET = (
    "_You've used today's AI allowance, so this answer is composed from the search results. "
    "Full answers are back tomorrow (UTC)._"
)


def today() -> date:
    return utcnow().date()


def spent_today(user_id: str, exclude_correlation_id: str = "") -> float:
    """USD the user's answers cost today, not counting the turn being answered."""
    with session_scope() as session:
        query = select(func.coalesce(func.sum(USAGE.c.cost_usd), 0.0)).where(
            USAGE.c.user_id == user_id, USAGE.c.day == today(), USAGE.c.correlation_id != exclude_correlation_id
        )
        return float(session.execute(query).scalar_one())


def is_spent(user_id: str, correlation_id: str, budget_usd: float) -> bool:
    """True when the user may not have another model answer today. Fails open: a database problem
    must not cost the user an answer."""
    if budget_usd <= 0:
        return False
    try:
        return spent_today(user_id, correlation_id) >= budget_usd
    except Exception:
        log.exception("could not read the AI budget; answering as if it were not spent")
        return False


def record(correlation_id: str, user_id: str, cost_usd: float, input_tokens: int, output_tokens: int) -> None:
    """Charge the turn (once) and drop the rows of days that no longer count."""
    day = today()
    values: dict[str, Any] = {
        "correlation_id": correlation_id, "user_id": user_id, "day": day, "cost_usd": cost_usd,
        "input_tokens": input_tokens, "output_tokens": output_tokens, "created_at": utcnow(),
    }
    try:
        with session_scope() as session:
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            session.execute(
                dialect.insert(USAGE).values(**values).on_conflict_do_nothing(index_elements=["correlation_id"])
            )
            # Yesterday's rows are kept for turns that straddle midnight; older ones serve nothing.
            session.execute(delete(USAGE).where(USAGE.c.day < day - timedelta(days=1)))
    except Exception:
        log.exception("could not record the AI spend of %s", correlation_id)
