"""The question path's writes, each pair merged into one statement where the database allows it.

A question writes its session (touched, or started) and its turn; an answer writes its turn and
touches the session. On Postgres each pair is one statement (data-modifying CTEs), saving a round trip
and a statement's worth of CPU per event, and atomic without a transaction block (see ``tx``);
elsewhere (SQLite) the two statements run one after the other in the handler's transaction.

Either way the outcome, and how a lost race shows, is the same: a session ended meanwhile raises
``Conflict``, a duplicate turn or a second active session a unique violation, and the caller retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import CTE, Connection, Insert, Select, bindparam, insert, select, update

from libs.common.db import utcnow
from libs.common.security import encrypt
from services.processor import sessions, turns, tx
from services.processor.tables import SESSIONS, TURNS

_TURN_COLUMNS = [column for column in TURNS.c if column.name != "session_id"]


def _turn_from(source: CTE) -> Insert:
    """INSERT the turn (bound as ``t_<column>``) with the session id taken from a one-row CTE."""
    # RETURNING tells whether a row went in: the driver's rowcount of a WITH ... INSERT is not reliable.
    return (
        insert(TURNS)
        .from_select(
            [TURNS.c.session_id, *_TURN_COLUMNS],
            select(source.c.id, *(bindparam(f"t_{column.name}", type_=column.type) for column in _TURN_COLUMNS)),
        )
        .returning(TURNS.c.correlation_id)
    )


@lru_cache(maxsize=2)
def _continue_and_insert(clear_pending: bool) -> Insert:
    touch = sessions.TOUCH_CLEAR if clear_pending else sessions.TOUCH
    touched = touch.returning(SESSIONS.c.id).cte("touched")
    return _turn_from(touched).add_cte(touched, nest_here=True)


@lru_cache(maxsize=1)
def _start_and_insert() -> Insert:
    values = {column.name: bindparam(f"s_{column.name}", type_=column.type) for column in SESSIONS.c}
    started = insert(SESSIONS).values(values).returning(SESSIONS.c.id).cte("started")
    return _turn_from(started).add_cte(started, nest_here=True)


def _turn_params(row: dict[str, Any]) -> dict[str, Any]:
    return {f"t_{name}": value for name, value in row.items() if name != "session_id"}


def join_and_insert(conn: Connection, plan: sessions.Plan, now: datetime, row: dict[str, Any]) -> sessions.Chat:
    """Write the session ``plan`` and insert the turn ``row`` (see ``turns.*_row``) of the message."""
    if not tx.autocommits(conn) or plan.how == "expire":
        with tx.atomic(conn):
            chat = sessions.apply(conn, plan, now)
            turns.add(conn, row)
        return chat
    params = _turn_params(row)
    if plan.how == "continue":
        assert plan.found is not None
        clear = plan.found.pending_action is not None and plan.chat.pending_action is None
        params.update(sid=plan.chat.id, uid=plan.chat.user_id, at=now)
        if conn.execute(_continue_and_insert(clear), params).first() is None:
            raise sessions.Conflict(f"session {plan.chat.id} was ended concurrently")
    else:
        params.update({f"s_{name}": value for name, value in sessions.session_row(plan.chat).items()})
        conn.execute(_start_and_insert(), params)
    return plan.chat


@lru_cache(maxsize=1)
def _answer_and_touch() -> Select[str | None, str]:
    answered = turns.ANSWER.cte("answered")
    touched = (
        update(SESSIONS)
        # The user's id too, as in sessions: a plan made while the table was empty must not walk it.
        .where(
            SESSIONS.c.id == select(answered.c.session_id).scalar_subquery(),
            SESSIONS.c.user_id == select(answered.c.user_id).scalar_subquery(),
            SESSIONS.c.ended_at.is_(None),
        )
        .values(last_activity_at=bindparam("at", type_=SESSIONS.c.last_activity_at.type))
        .cte("touched")
    )
    return select(answered.c.session_id, answered.c.user_id).add_cte(touched)


def answer(
    conn: Connection,
    correlation_id: str,
    text: str,
    answerer: str,
    citations: Sequence[str],
    now: datetime | None = None,
) -> turns.Answered | None:
    """Store the answer of an open turn and touch its session; None when the turn was already answered
    or failed (or is unknown), and then nothing changes."""
    now = now or utcnow()
    if not tx.autocommits(conn):
        recorded = turns.record_answer(conn, correlation_id, text, answerer, citations, now)
        if recorded is not None:
            sessions.touch(conn, recorded.session_id, recorded.user_id, now)
        return recorded
    params = turns.answer_params(correlation_id, encrypt(text), answerer, citations, now)
    row = conn.execute(_answer_and_touch(), {**params, "at": now}).first()
    return turns.Answered(session_id=row[0], user_id=row[1]) if row is not None else None
