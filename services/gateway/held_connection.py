"""Database connections kept by long-lived threads (the inbound writer, the outbox relay, the
reply sender's workers).

Checking a connection out of the pool costs a round trip (the pre-ping) per transaction; a thread
that runs hundreds of short transactions a second keeps one instead. What the pool would have
handled is handled here: a connection the server dropped is replaced (and the work retried once,
as nothing was committed), connections are recycled, and a new engine (settings reset in tests,
a fork) is followed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from libs.common import db

log = logging.getLogger(__name__)

T = TypeVar("T")

# Well under Postgres/proxy idle limits and the pool's own recycle (30 min).
RECYCLE_SECONDS = 300.0


class HeldConnection:
    """One connection, used by one thread at a time."""

    def __init__(self, recycle: float = RECYCLE_SECONDS) -> None:
        self.recycle = recycle
        self._conn: Connection | None = None
        self._engine: Engine | None = None
        self._since = 0.0

    def _current(self) -> tuple[Connection, bool]:
        """The connection, and whether it was just checked out (pre-pinged by the pool)."""
        engine = db.get_engine()
        conn = self._conn
        if conn is not None and (
            self._engine is not engine or conn.closed or conn.invalidated
            or time.monotonic() - self._since > self.recycle
        ):
            self.close()
            conn = None
        if conn is None:
            conn = engine.connect()
            self._conn, self._engine, self._since = conn, engine, time.monotonic()
            return conn, True
        return conn, False

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in one transaction: committed when it returns, rolled back if it raises.

        When a connection kept from earlier turns out to be dead, ``work`` runs once more on a new
        one, so ``work`` must be safe to repeat after a rollback (or after a commit whose answer
        was lost: the gateway's writes are all idempotent).
        """
        for attempt in (1, 2):
            conn, fresh = self._current()
            try:
                with conn.begin():
                    return work(conn)
            except DBAPIError as exc:
                self.close()  # its state is unknown: the next use checks out a new one
                if attempt == 1 and not fresh and exc.connection_invalidated:
                    log.info("a kept database connection was dropped (%s); retrying on a new one",
                             type(exc.orig).__name__)
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # a dead connection may fail to close; it is discarded anyway
                log.debug("closing a kept connection failed: %s", type(exc).__name__)


class HeldConnections:
    """A few kept connections shared by many threads (the reply sender's): a thread borrows one for
    a transaction only, so threads waiting on Twilio pin none, and at most ``size`` are kept."""

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._idle: list[HeldConnection] = []
        self._lock = threading.Lock()

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """``HeldConnection.transaction`` on a borrowed connection (waits while all are in use)."""
        with self._slots:
            with self._lock:
                held = self._idle.pop() if self._idle else HeldConnection()
            try:
                return held.transaction(work)
            finally:
                with self._lock:
                    self._idle.append(held)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for held in idle:
            held.close()
