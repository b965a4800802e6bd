"""The transactional outbox: events are stored with the state they announce, then relayed.

The webhook writes its event in the same transaction as the inbound message and answers Twilio
without touching the broker; ``relay_once`` publishes pending rows afterwards. A broker outage
leaves rows pending (with attempts, the last error and a backoff): nothing accepted is ever lost,
and publication is at least once (consumers dedupe on the envelope id).

Several gateway replicas can relay at once: on Postgres each claims its batch with
``FOR UPDATE SKIP LOCKED``. SQLite (embedded, one process) relies on a process-wide lock.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from libs.common import bus, db, telemetry
from libs.common.events import Envelope
from libs.common.security import decrypt, encrypt
from libs.common.settings import get_settings
from services.gateway.held_connection import HeldConnection
from services.gateway.redrive import RedriveSchedule
from services.gateway.sql import OUTBOX

log = logging.getLogger(__name__)

BATCH_SIZE = 100
MAX_BACKOFF = timedelta(seconds=60)
# A row whose envelope cannot be read (a lost encryption key) is retried rarely, never dropped.
UNREADABLE_BACKOFF = timedelta(hours=1)
# Published rows are kept this long (debugging, replay), then pruned so the table stays small.
PUBLISHED_RETENTION = timedelta(hours=1)
PRUNE_EVERY = 60.0
# After a wake-up the relay lingers this long so a burst of webhooks goes out in one pass
# (one transaction) instead of competing with the requests one row at a time.
COALESCE_DELAY = 0.02

_relay_lock = threading.Lock()


_INSERT = OUTBOX.insert()
_PENDING = (
    select(OUTBOX.c.id, OUTBOX.c.envelope, OUTBOX.c.attempts)
    .where(OUTBOX.c.published_at.is_(None))
    .where(or_(OUTBOX.c.next_attempt_at.is_(None), OUTBOX.c.next_attempt_at <= bindparam("now")))
    .order_by(OUTBOX.c.created_at, OUTBOX.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_MARK_PUBLISHED = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("now"), attempts=OUTBOX.c.attempts + 1, last_error=None, next_attempt_at=None)
)
_MARK_FAILED = (
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("row_id"))
    .values(attempts=bindparam("new_attempts"), last_error=bindparam("error"), next_attempt_at=bindparam("retry_at"))
)


def outbox_row(envelope: Envelope, user_id: str | None = None) -> dict[str, Any]:
    """The outbox row that stores ``envelope`` (sealed: payloads carry message bodies)."""
    if user_id is None:
        candidate = envelope.payload.get("user_id")
        user_id = candidate if isinstance(candidate, str) else None
    return {
        "id": envelope.id,
        "event_type": envelope.type.value,
        "correlation_id": envelope.correlation_id,
        "user_id": user_id,
        "envelope": encrypt(json.dumps(envelope.to_json(), separators=(",", ":"))),
        "created_at": db.utcnow(),
        "attempts": 0,
    }


def add_to_outbox(conn: Session | Connection, envelope: Envelope, user_id: str | None = None) -> None:
    """Store ``envelope`` for publication when the transaction of ``conn`` commits (never before)."""
    conn.execute(_INSERT, outbox_row(envelope, user_id))


def backoff_for(attempts: int) -> timedelta:
    """Exponential backoff with jitter after ``attempts`` failed publishes (1 s, 2 s, 4 s ... 60 s)."""
    base = min(MAX_BACKOFF.total_seconds(), 2.0 ** max(attempts - 1, 0))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def relay_once(limit: int = BATCH_SIZE, now: datetime | None = None) -> int:
    """Publish up to ``limit`` pending outbox rows whose backoff has passed; returns how many went out.

    Stops at the first broker error (the broker is most likely down for every row): that row gets
    attempts + 1, the error and a backoff; the rest stay pending for the next pass.
    """
    with _relay_lock, db.get_engine().begin() as conn:
        return _relay_batch(conn, limit, now or db.utcnow())


def _publish_failed(conn: Connection, row_id: str, attempts: int, envelope: Envelope, exc: Exception,
                    now: datetime) -> None:
    delay = backoff_for(attempts + 1)
    log.warning(
        "outbox: publishing %s for %s failed (attempt %d): %s; retrying in %.1fs",
        envelope.type.value, envelope.correlation_id, attempts + 1, type(exc).__name__, delay.total_seconds(),
    )
    conn.execute(_MARK_FAILED, {
        "row_id": row_id, "new_attempts": attempts + 1, "error": _short(exc), "retry_at": now + delay,
    })


def _relay_batch(conn: Connection, limit: int, now: datetime) -> int:
    """One relay pass in the caller's transaction on ``conn``."""
    published: list[str] = []
    first: tuple[str, int, Envelope] | None = None  # the pass's first published row
    rows = conn.execute(_PENDING, {"now": now, "limit": limit}).all()
    # The pass's events go out together (bus.holding): a burst of webhooks costs the next hop a few tasks.
    with bus.holding() as held:
        for row_id, sealed, attempts in rows:
            try:
                envelope = Envelope.from_json(json.loads(decrypt(sealed)))
            except Exception as exc:
                log.error("outbox row %s cannot be read (%s); retrying in %s", row_id, type(exc).__name__,
                          UNREADABLE_BACKOFF)
                conn.execute(_MARK_FAILED, {
                    "row_id": row_id, "new_attempts": attempts + 1, "error": _short(exc),
                    "retry_at": now + UNREADABLE_BACKOFF,
                })
                continue
            try:
                with telemetry.remote_parent(envelope.trace):
                    bus.publish(envelope)
            except Exception as exc:
                _publish_failed(conn, row_id, attempts, envelope, exc, now)
                break
            published.append(row_id)
            first = first or (row_id, attempts, envelope)
    if held is not None and first is not None:
        try:
            held.send()
        except Exception as exc:
            # None of the pass went out. The first row backs off, as a row whose own publish failed does; the
            # rest stay pending for the next pass.
            _publish_failed(conn, *first, exc, now)
            published = []
    if published:
        # One statement for the whole batch: the relay shares the database with the webhook.
        conn.execute(_MARK_PUBLISHED, {"ids": published, "now": db.utcnow()})
    return len(published)


def pending_count() -> int:
    with db.session_scope() as session:
        count = session.execute(
            select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
        ).scalar_one()
    return int(count)


def prune_published(older_than: timedelta = PUBLISHED_RETENTION, now: datetime | None = None) -> int:
    """Delete rows published more than ``older_than`` ago; returns how many were removed."""
    cutoff = (now or db.utcnow()) - older_than
    with db.session_scope() as session:
        result = session.execute(
            delete(OUTBOX).where(OUTBOX.c.published_at.is_not(None)).where(OUTBOX.c.published_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class OutboxRelay:
    """Background thread that relays the outbox: at once when woken (after each webhook commit),
    and on a periodic sweep that picks up rows left by a broker outage or another process."""

    def __init__(self, interval: float | None = None, batch_size: int = BATCH_SIZE) -> None:
        self.interval = interval if interval is not None else get_settings().broker.outbox_relay_interval
        self.batch_size = batch_size
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._last_redrive = 0.0
        broker = get_settings().broker
        self._redrive = RedriveSchedule(broker.redrive_after, broker.redrive_max_age)
        self._held = HeldConnection()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Relay now (called after a webhook's transaction committed); cheap and non-blocking."""
        self._wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._wakeup.wait(self.interval):
                self._stopping.wait(COALESCE_DELAY)
            # Cleared before relaying: a wake() during the pass triggers another pass.
            self._wakeup.clear()
            if self._stopping.is_set():
                break
            try:
                while not self._stopping.is_set() and self._relay_once() >= self.batch_size:
                    pass
                if time.monotonic() - self._last_prune >= PRUNE_EVERY:
                    self._last_prune = time.monotonic()
                    pruned = prune_published()
                    if pruned:
                        log.debug("outbox: pruned %d published rows", pruned)
                if time.monotonic() - self._last_redrive >= self._redrive.every:
                    self._last_redrive = time.monotonic()
                    if self._held.transaction(lambda conn: self._redrive.sweep(conn, db.utcnow())):
                        self._wakeup.set()
                failures = 0
            except Exception as exc:
                # The database itself is unreachable: keep trying, slower, without spinning.
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                log.warning("outbox relay pass failed (%s); next try in %.1fs", type(exc).__name__, delay)
                self._stopping.wait(delay)
        self._held.close()

    def _relay_once(self) -> int:
        # relay_once on the connection this thread keeps: a pass every few milliseconds under load
        # would otherwise pay a pool checkout (and its pre-ping round trip) each time.
        with _relay_lock:
            return self._held.transaction(lambda conn: _relay_batch(conn, self.batch_size, db.utcnow()))
