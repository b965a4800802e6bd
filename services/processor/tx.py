"""Transactions that lose a race are retried from the start.

Every decision the processor takes (does this turn exist, which session is active, is it answered)
is protected by a unique key or a conditional UPDATE rather than by locks, so it behaves the same
on Postgres and SQLite. The losing transaction rolls back and runs again, and then sees the winner's
committed state (a redelivery, an existing session, an answered turn).

The processor works on Core connections (no ORM session): its statements are few and built once, and
the ORM's bookkeeping cost more CPU than the statements themselves.

On Postgres a handler runs in autocommit: the usual event is one read and one write, or one write
(see ``writes``), and a single statement is atomic by itself, so BEGIN and COMMIT would be two more
round trips for nothing. Under READ COMMITTED a read inside a transaction sees no more than one
outside it, and the writes re-check what they depend on (conditional UPDATEs, unique keys). Where a
handler writes several statements that must happen together it opens ``atomic(conn)``. Elsewhere
(SQLite) the whole handler is one transaction and ``atomic`` adds nothing.

The connections stay checked out between events (``Connections``): a pool checkout with its pre-ping
is a round trip and about as much CPU as a statement, paid on every event. What the pre-ping guarded
against, a connection that died while idle, is handled after the fact instead: the handler fails with
the connection invalidated and runs once more on a fresh one (safe: handlers are idempotent, so a
write that did reach the database before the connection died is found and replayed). A connection
idle for a while, or kept for long, goes back to the pool, which pings and recycles as configured.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from libs.common.db import get_engine, is_unique_violation
from libs.common.settings import get_settings
from services.processor.sessions import Conflict

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 5
# A kept connection unused for longer goes back to the pool (pinged there on its next checkout)...
MAX_IDLE_SECONDS = 30.0
# ...and so does one kept for longer than this, so the pool's recycling still applies to it.
MAX_KEPT_SECONDS = 600.0


class RetriesExhausted(RuntimeError):
    """The same transaction kept losing races; the bus reports it and the user gets an apology."""


class Connections:
    """Connections of one engine kept checked out between transactions, one per concurrent handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[Connection, float, float]] = []  # connection, checked out at, last used
        self._engine: Engine | None = None
        self._pid = os.getpid()
        # Inherited over fork: the parent's sockets, never to be used or closed here (closing would
        # end the parent's sessions), only kept from the garbage collector.
        self._inherited: list[Connection] = []

    def lease(self) -> tuple[Connection, float]:
        engine = get_engine()
        stale: list[Connection] = []
        found: tuple[Connection, float] | None = None
        now = time.monotonic()
        with self._lock:
            if self._pid != os.getpid():
                self._inherited.extend(conn for conn, _, _ in self._idle)
                self._idle.clear()
                self._pid = os.getpid()
            if self._engine is not engine:
                # Settings changed (tests) and the old engine was disposed: its connections go too.
                stale.extend(conn for conn, _, _ in self._idle)
                self._idle.clear()
                self._engine = engine
            while self._idle:
                conn, since, last = self._idle.pop()
                if now - last <= MAX_IDLE_SECONDS and now - since <= MAX_KEPT_SECONDS:
                    found = (conn, since)
                    break
                stale.append(conn)
        for conn in stale:
            _give_back(conn, engine)
        if found is not None:
            return found
        conn = engine.connect()
        if engine.dialect.name == "postgresql":
            # Restored to the engine's default when the connection goes back to the pool.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn, now

    def release(self, conn: Connection, since: float) -> None:
        if conn.invalidated or conn.closed:
            _give_back(conn, None)
            return
        with self._lock:
            if (
                self._pid == os.getpid()
                and conn.engine is self._engine
                and len(self._idle) < get_settings().database.pool_size
            ):
                self._idle.append((conn, since, time.monotonic()))
                return
        _give_back(conn, None)

    def close(self) -> None:
        """Give every kept connection back (process exit)."""
        with self._lock:
            idle = [conn for conn, _, _ in self._idle] if self._pid == os.getpid() else []
            self._idle.clear()
        for conn in idle:
            _give_back(conn, None)


def _give_back(conn: Connection, current: Engine | None) -> None:
    try:
        if current is not None and conn.engine is not current and not conn.invalidated:
            conn.invalidate()  # its engine was disposed: close the DBAPI connection now, not at GC
        conn.close()
    except Exception:  # a dead connection may fail to close; it is being dropped either way
        log.debug("dropping a processor connection failed", exc_info=True)


CONNECTIONS = Connections()
atexit.register(CONNECTIONS.close)


def autocommits(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


@contextmanager
def atomic(conn: Connection) -> Iterator[None]:
    """Writes that must happen together or not at all (a transaction block on an autocommit
    connection; inside the handler's transaction elsewhere)."""
    if not autocommits(conn):
        yield
        return
    # Through SQLAlchemy, so that a failure is reported (and a lost connection detected) as any other.
    conn.exec_driver_sql("BEGIN")
    try:
        yield
    except BaseException:
        try:
            conn.exec_driver_sql("ROLLBACK")
        except Exception:  # the original error matters; a dead connection is dropped on release
            log.debug("rollback failed", exc_info=True)
        raise
    conn.exec_driver_sql("COMMIT")


def retrying(work: Callable[[Connection], T], what: str, correlation_id: str) -> T:
    reconnected = False
    for attempt in range(1, MAX_ATTEMPTS + 1):
        conn, since = CONNECTIONS.lease()
        try:
            if autocommits(conn):
                try:
                    return work(conn)
                finally:
                    conn.rollback()  # ends SQLAlchemy's bookkeeping; in autocommit nothing is pending
            with conn.begin():
                return work(conn)
        except DBAPIError as exc:
            if exc.connection_invalidated and not reconnected:
                # The kept connection died while idle (server restart, network): once more on a new one.
                reconnected = True
                log.info("%s for %s: database connection lost; retrying on a new one", what, correlation_id)
                continue
            if not (isinstance(exc, IntegrityError) and is_unique_violation(exc)):
                raise
            log.info("%s for %s lost a race (attempt %d); retrying", what, correlation_id, attempt)
        except Conflict:
            log.info("%s for %s saw a concurrent change (attempt %d); retrying", what, correlation_id, attempt)
        finally:
            CONNECTIONS.release(conn, since)
    raise RetriesExhausted(f"{what} for {correlation_id} conflicted {MAX_ATTEMPTS} times")
