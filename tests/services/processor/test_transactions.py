"""How the processor talks to its database: kept connections (and what happens when one dies), writes
that happen together or not at all, and the few statements an ordinary turn takes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, event

from libs.common.db import get_engine, utcnow
from services.processor import sessions, tx
from tests.conftest import PG_ADMIN
from tests.services.processor.support import (
    ALICE,
    active_sessions,
    ai_response,
    ask_and_answer,
    deliver,
    new_sid,
    received,
    reply_of,
    say,
    search_of,
    sessions_of,
)


def _driver_connection(conn: Connection) -> Any:
    return conn.connection.driver_connection


def _backend_pid(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@contextmanager
def _counting(name: str) -> Iterator[list[int]]:
    target = get_engine() if name == "before_cursor_execute" else get_engine().pool
    count = [0]

    def listener(*_args: Any) -> None:
        count[0] += 1

    event.listen(target, name, listener)
    try:
        yield count
    finally:
        event.remove(target, name, listener)


def test_one_connection_serves_event_after_event(database: str) -> None:
    first = tx.retrying(_driver_connection, "test", "SMkeep1")
    ask_and_answer("q", "a")
    second = tx.retrying(_driver_connection, "test", "SMkeep2")
    assert first is second


def test_a_connection_idle_for_long_goes_back_to_the_pool(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    say("/help")
    with _counting("checkout") as checkouts:
        say("/help")
        assert checkouts[0] == 0  # kept: no checkout, no pre-ping
        monkeypatch.setattr(tx, "MAX_IDLE_SECONDS", -1.0)
        say("/help")
        assert checkouts[0] == 1  # given back, and checked out (pinged) afresh


def test_a_kept_connection_that_died_is_replaced_without_failing_the_event(pg_database: str) -> None:
    ask_and_answer("before the restart", "answer")
    pid = tx.retrying(_backend_pid, "test", "SMpid")
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() != (0,):
            admin.execute("SELECT pg_sleep(0.01)")

    request = search_of(say("after the restart"))

    assert [item.text for item in request.history] == ["before the restart", "answer"]
    assert tx.retrying(_backend_pid, "test", "SMpid2") != pid


def test_writes_in_atomic_happen_together_or_not_at_all(database: str) -> None:
    def start_then_fail(conn: Connection) -> None:
        with tx.atomic(conn):
            sessions.start_session(conn, ALICE, utcnow())
            raise RuntimeError("after the first write")

    with pytest.raises(RuntimeError):
        tx.retrying(start_then_fail, "test", "SMatomic")

    assert sessions_of(ALICE) == []
    say("/help")  # the connection is usable afterwards
    assert len(active_sessions(ALICE)) == 1


def test_a_turn_takes_one_read_and_one_write_per_event_on_postgres(database: str) -> None:
    # Two statements (SQLite) merge into one on Postgres: a data-modifying WITH.
    merged = database.startswith("postgresql")
    for first_message in (True, False):
        sid = new_sid()
        with _counting("before_cursor_execute") as statements:
            search_of(deliver(received(sid, "how do sessions expire?")))
        assert statements[0] == (2 if merged else 3), ("first" if first_message else "returning", statements[0])
        with _counting("before_cursor_execute") as statements:
            reply_of(deliver(ai_response(sid, "after 30 idle minutes")))
        assert statements[0] == (1 if merged else 2)


@pytest.mark.parametrize("database", ["postgres"], indirect=True)
def test_session_writes_find_their_row_by_index_even_with_a_plan_made_on_an_empty_table(database: str) -> None:
    """Postgres keeps a prepared statement's generic plan, made while chat_sessions was young and unanalyzed,
    until the next ANALYZE. Each session write must find its row through an index even with that plan: one
    that walked every active session cost a bench run time in proportion to the users seen so far."""
    from sqlalchemy.dialects import postgresql

    from services.processor import writes

    statements = {
        "touch": sessions.TOUCH,
        "end": sessions._END,
        "answer": writes._answer_and_touch(),
        "continue": writes._continue_and_insert(False),
    }
    with get_engine().connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        for name, statement in statements.items():
            compiled = statement.compile(dialect=postgresql.psycopg.dialect())
            names = list(dict.fromkeys(compiled.positiontup or [])) or list(compiled.params)
            sql = str(compiled)
            for i, key in enumerate(names, 1):
                sql = sql.replace(f"%({key})s", f"${i}")
            conn.exec_driver_sql(f"PREPARE p_{name} AS {sql}")
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(
                f"EXPLAIN EXECUTE p_{name}({', '.join('NULL' for _ in names)})"))
            lines = plan.splitlines()
            scans = [i for i, line in enumerate(lines) if "Scan" in line and "on chat_sessions" in line]
            assert scans, (name, plan)
            for i in scans:  # an index scan with a condition on the index, never a walk through it
                assert "Index" in lines[i] and "Index Cond" in lines[i + 1], (name, plan)
        conn.rollback()
