"""The analytics summary: counts, latency percentiles, search, answerers, cost, errors over a window.

Percentiles interpolate linearly between the closest ranks (Postgres' percentile_cont): Postgres
computes them in SQL; SQLite (embedded, small) has no percentile function, so its values are
fetched and computed here with the same formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from libs.common import db
from libs.common.events import EventType
from libs.common.models.analytics import AnalyticsEvent, SearchQuery, TurnMetrics
from services.analytics.merge import STATUSES

PERCENTILES = (0.5, 0.95, 0.99)
MAX_HOURS = 24 * 90

# Summary name -> the TurnMetrics duration column it reports.
HOPS: dict[str, InstrumentedAttribute[float | None]] = {
    "received_to_search_requested": TurnMetrics.queue_ms,
    "search": TurnMetrics.search_ms,
    "ai": TurnMetrics.ai_ms,
    "ai_to_reply_ready": TurnMetrics.persist_ms,
    "reply_ready_to_sent": TurnMetrics.send_ms,
}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks, as percentile_cont does."""
    if not sorted_values:
        raise ValueError("no values")
    position = fraction * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    low_value, high_value = sorted_values[lower], sorted_values[upper]
    return low_value + (high_value - low_value) * (position - lower)


def _label(fraction: float) -> str:
    return f"p{round(fraction * 100)}"


def _distribution(
    session: Session, column: Any, where: Sequence[ColumnElement[bool]], fractions: Sequence[float] = PERCENTILES
) -> dict[str, Any]:
    conditions = [*where, column.is_not(None)]
    if session.get_bind().dialect.name == "postgresql":
        aggregates = [func.percentile_cont(f).within_group(column) for f in fractions]
        row = session.execute(select(func.count(column), *aggregates).where(*conditions)).one()
        count, values = int(row[0]), list(row[1:])
    else:
        ordered = [float(v) for v in session.scalars(select(column).where(*conditions).order_by(column))]
        count = len(ordered)
        values = [percentile(ordered, f) if ordered else None for f in fractions]
    result: dict[str, Any] = {"count": count}
    for fraction, value in zip(fractions, values, strict=True):
        result[_label(fraction)] = None if value is None else round(float(value), 3)
    return result


def summary(hours: float = 24, now: datetime | None = None) -> dict[str, Any]:
    if not 0 < hours <= MAX_HOURS:
        raise ValueError(f"hours must be greater than 0 and at most {MAX_HOURS}")
    until = now or db.utcnow()
    since = until - timedelta(hours=hours)
    in_window = [TurnMetrics.started_at >= since]
    with db.session_scope() as session:
        by_status = dict.fromkeys(STATUSES, 0)
        for status, count in session.execute(
            select(TurnMetrics.status, func.count()).where(*in_window).group_by(TurnMetrics.status)
        ):
            by_status[status] = int(count)
        users = session.execute(
            select(func.count(func.distinct(TurnMetrics.user_id))).where(*in_window)
        ).scalar_one()
        events = {
            str(event_type): int(count)
            for event_type, count in session.execute(
                select(AnalyticsEvent.type, func.count())
                .where(AnalyticsEvent.occurred_at >= since)
                .group_by(AnalyticsEvent.type)
            )
        }
        latency = {
            "end_to_end": _distribution(session, TurnMetrics.e2e_ms, in_window),
            "hops": {name: _distribution(session, column, in_window) for name, column in HOPS.items()},
        }
        search = _search_stats(session, since)
        answerers = {
            str(answerer): int(count)
            for answerer, count in session.execute(
                select(TurnMetrics.answerer, func.count())
                .where(*in_window, TurnMetrics.answerer.is_not(None))
                .group_by(TurnMetrics.answerer)
                .order_by(TurnMetrics.answerer)
            )
        }
        tokens_in, tokens_out, cost, fallbacks, retries, fallbacks_taken = session.execute(
            select(
                func.coalesce(func.sum(TurnMetrics.input_tokens), 0),
                func.coalesce(func.sum(TurnMetrics.output_tokens), 0),
                func.coalesce(func.sum(TurnMetrics.cost_usd), 0.0),
                func.count(TurnMetrics.fallback_reason),
                func.coalesce(func.sum(TurnMetrics.ai_retries), 0),
                func.coalesce(func.sum(TurnMetrics.ai_fallbacks), 0),
            ).where(*in_window)
        ).one()
        errors = {
            str(stage): int(count)
            for stage, count in session.execute(
                select(TurnMetrics.error_stage, func.count())
                .where(*in_window, TurnMetrics.error_stage.is_not(None))
                .group_by(TurnMetrics.error_stage)
                .order_by(TurnMetrics.error_stage)
            )
        }
    return {
        "window": {"hours": hours, "since": since.isoformat(), "until": until.isoformat()},
        "turns": {
            "received": sum(by_status.values()),
            "answered": by_status["answered"],
            "failed": by_status["failed"],
            "rate_limited": by_status["rate_limited"],
            "commands": by_status["command"],
            "pending": by_status["pending"],
            "users": int(users),
        },
        "messages_sent": events.get(EventType.MESSAGE_SENT.value, 0),
        "events": dict(sorted(events.items())),
        "latency_ms": latency,
        "search": search,
        "answerers": answerers,
        "ai": {
            "input_tokens": int(tokens_in),
            "output_tokens": int(tokens_out),
            "cost_usd": round(float(cost), 6),
            "fallbacks": int(fallbacks),  # turns that left at least one provider behind
            "fallbacks_taken": int(fallbacks_taken),  # providers given up, summed over turns
            "retries": int(retries),  # provider calls repeated, summed over turns
        },
        "errors_by_stage": errors,
    }


def _search_stats(session: Session, since: datetime) -> dict[str, Any]:
    by_mode: dict[str, Any] = {}
    rows = session.execute(
        select(
            SearchQuery.mode,
            func.count(),
            func.avg(SearchQuery.result_count),
            func.count(SearchQuery.error),
            func.sum(case((SearchQuery.result_count == 0, 1), else_=0)),
        )
        .where(SearchQuery.occurred_at >= since)
        .group_by(SearchQuery.mode)
        .order_by(SearchQuery.mode)
    ).all()
    for mode, count, avg_results, errors, empty in rows:
        took = _distribution(session, SearchQuery.took_ms, [SearchQuery.occurred_at >= since, SearchQuery.mode == mode],
                             fractions=(0.5, 0.95))
        by_mode[str(mode)] = {
            "count": int(count),
            "avg_results": round(float(avg_results or 0), 3),
            "no_results": int(empty or 0),
            "errors": int(errors),
            "p50_ms": took["p50"],
            "p95_ms": took["p95"],
        }
    return {"total": sum(m["count"] for m in by_mode.values()), "by_mode": by_mode}
