"""A connection kept by a long-lived thread: replaced when the server drops it, retried once,
following a new engine; work that fails is rolled back."""

from __future__ import annotations

import threading

import psycopg
import pytest
from sqlalchemy import Connection, text

from libs.common import db
from libs.common.models.messaging import InboundMessage
from services.gateway.held_connection import HeldConnection, HeldConnections
from services.gateway.sql import INBOUND
from tests.services.gateway.conftest import count


def _backend_pid(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_the_connection_is_kept_between_transactions(pg_database: str) -> None:
    held = HeldConnection()
    try:
        assert held.transaction(_backend_pid) == held.transaction(_backend_pid)
    finally:
        held.close()


def test_a_connection_dropped_by_the_server_is_replaced_and_the_work_retried(pg_database: str) -> None:
    held = HeldConnection()
    try:
        first = held.transaction(_backend_pid)
        with psycopg.connect(pg_database.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = held.transaction(_backend_pid)
        assert second != first
    finally:
        held.close()


def test_a_new_engine_is_followed(pg_database: str) -> None:
    held = HeldConnection()
    try:
        first = held.transaction(_backend_pid)
        db.reset()  # what a settings reset or a fork does
        assert held.transaction(_backend_pid) != first
    finally:
        held.close()


def test_failed_work_is_rolled_back(gateway_db: str) -> None:
    held = HeldConnection()

    def insert_then_fail(conn: Connection) -> None:
        conn.execute(INBOUND.insert().values(
            message_sid="SMx", user_id="u_1", body_enc="x", num_media=0, disposition="accepted",
            received_at=db.utcnow(),
        ))
        raise ValueError("the rest failed")

    try:
        with pytest.raises(ValueError):
            held.transaction(insert_then_fail)
        assert count(InboundMessage) == 0
        held.transaction(lambda conn: conn.execute(text("SELECT 1")))  # still usable
    finally:
        held.close()


def test_shared_kept_connections_are_borrowed_per_transaction(pg_database: str) -> None:
    """More threads than kept connections: each transaction borrows one; never more are opened."""
    shared = HeldConnections(size=2)
    start = threading.Barrier(6)
    pids: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait()
            for _ in range(5):
                pids.append(shared.transaction(_backend_pid))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    shared.close()
    assert errors == [] and len(pids) == 30
    assert 1 <= len(set(pids)) <= 2
