"""The transactional outbox: written with its transaction, relayed at least once, never lost."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import select, update

from libs.common import bus, db
from libs.common.events import Envelope, EventType, MessageReceived, Service
from libs.common.models.messaging import OutboxEvent
from services.gateway.outbox import OutboxRelay, add_to_outbox, pending_count, prune_published, relay_once
from services.gateway.sql import OUTBOX
from tests.services.gateway.conftest import count


def _event(sid: str) -> Envelope:
    payload = MessageReceived(message_sid=sid, user_id="u_1", body="hi", received_at=datetime.now(UTC))
    return Envelope.new(payload, correlation_id=sid, source=Service.GATEWAY.value)


def test_rows_exist_only_when_their_transaction_commits(gateway_db: str) -> None:
    with pytest.raises(RuntimeError), db.session_scope() as session:
        add_to_outbox(session, _event("SMrolledback"))
        raise RuntimeError("the state change failed")
    assert count(OutboxEvent) == 0
    with db.session_scope() as session:
        add_to_outbox(session, _event("SMcommitted"))
    assert pending_count() == 1
    with db.session_scope() as session:
        row = session.execute(select(OutboxEvent)).scalar_one()
    assert row.user_id == "u_1" and row.event_type == "message.received" and row.correlation_id == "SMcommitted"


def test_relay_publishes_in_order_exactly_once(gateway_db: str) -> None:
    events = [_event(f"SM{i}") for i in range(5)]
    for event in events:
        with db.session_scope() as session:
            add_to_outbox(session, event)
    with bus.capture_published() as sent:
        assert relay_once(limit=3) == 3
        assert relay_once(limit=3) == 2
        assert relay_once() == 0
    assert sent == events  # the envelopes come back exactly as stored
    assert pending_count() == 0


def test_an_unreadable_row_is_parked_not_dropped(gateway_db: str) -> None:
    with db.session_scope() as session:
        add_to_outbox(session, _event("SMgood"))
        add_to_outbox(session, _event("SMbad"))
        session.execute(update(OUTBOX).where(OUTBOX.c.correlation_id == "SMbad").values(envelope="not-a-token"))
    with bus.capture_published() as sent:
        assert relay_once() == 1
    assert [e.correlation_id for e in sent] == ["SMgood"]
    with db.session_scope() as session:
        bad = session.execute(select(OutboxEvent).where(OutboxEvent.correlation_id == "SMbad")).scalar_one()
    assert bad.published_at is None and bad.attempts == 1 and bad.last_error
    assert pending_count() == 1


def test_published_rows_are_pruned_after_retention(gateway_db: str) -> None:
    for sid in ("SMa", "SMb"):
        with db.session_scope() as session:
            add_to_outbox(session, _event(sid))
    with bus.capture_published():
        relay_once()
    with db.session_scope() as session:
        add_to_outbox(session, _event("SMpending"))
    assert prune_published(timedelta(hours=1)) == 0  # too recent
    assert prune_published(timedelta(hours=1), now=db.utcnow() + timedelta(hours=2)) == 2
    assert count(OutboxEvent) == 1 and pending_count() == 1  # the pending row is never pruned


def test_rows_locked_by_another_relay_are_skipped(pg_database: str) -> None:
    """Two gateway replicas relaying at once: FOR UPDATE SKIP LOCKED gives each row to one of them."""
    for i in range(4):
        with db.session_scope() as session:
            add_to_outbox(session, _event(f"SM{i}"))
    dsn = pg_database.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as other_replica:
        other_replica.execute(
            "SELECT id FROM outbox WHERE correlation_id IN ('SM0', 'SM1') FOR UPDATE"
        ).fetchall()
        with bus.capture_published() as sent:
            assert relay_once() == 2
        assert sorted(e.correlation_id for e in sent) == ["SM2", "SM3"]
        other_replica.rollback()
    with bus.capture_published() as rest:
        assert relay_once() == 2
    assert sorted(e.correlation_id for e in rest) == ["SM0", "SM1"]


def _wait_for(sent: list[Envelope], n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(sent) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_relay_thread_sweeps_periodically(gateway_db: str) -> None:
    relay = OutboxRelay(interval=0.05)
    with bus.capture_published() as sent:
        relay.start()
        try:
            with db.session_scope() as session:
                add_to_outbox(session, _event("SMswept"))  # nobody calls wake(): the sweep finds it
            _wait_for(sent, 1)
        finally:
            relay.stop()
    assert [e.correlation_id for e in sent] == ["SMswept"]
    assert not relay.running


def test_relay_thread_is_woken(gateway_db: str) -> None:
    relay = OutboxRelay(interval=3600.0)  # the sweep would wait an hour: only wake() explains a publish
    with bus.capture_published() as sent:
        relay.start()
        try:
            with db.session_scope() as session:
                add_to_outbox(session, _event("SMwoken"))
            relay.wake()
            _wait_for(sent, 1)
        finally:
            relay.stop()
    assert [(e.type, e.correlation_id) for e in sent] == [(EventType.MESSAGE_RECEIVED, "SMwoken")]


def test_a_relay_pass_sends_its_rows_together(gateway_db: str, redis_prefix: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import REDIS_URL, apply_env, queued_tasks

    apply_env(monkeypatch, BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=redis_prefix)
    with db.session_scope() as session:
        for i in range(3):
            add_to_outbox(session, _event(f"SM{i}"))
    assert relay_once() == 3
    (task,) = queued_tasks(redis_prefix, "processor")
    assert task[0] == "repotalk.processor.handle_many" and len(task[1]) == 3
    assert pending_count() == 0


def test_when_the_pass_cannot_be_sent_every_row_stays_pending(gateway_db: str, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    from tests.conftest import apply_env

    apply_env(monkeypatch, BROKER_URL="redis://127.0.0.1:1/0", BROKER_PUBLISH_TIMEOUT="0.2")
    # Analytics' copies as tasks of the pass too: the process's batcher would keep them, and retry at exit.
    monkeypatch.setattr(bus, "BATCHED_SUBSCRIBERS", frozenset())
    with db.session_scope() as session:
        for i in range(3):
            add_to_outbox(session, _event(f"SM{i}"))
    assert relay_once() == 0
    with db.session_scope() as session:
        rows = session.execute(select(OutboxEvent).order_by(OutboxEvent.correlation_id)).scalars().all()
        state = [(r.correlation_id, r.published_at is None, r.attempts) for r in rows]
    # The first row backs off (as a row whose own publish failed does); the others wait for the next pass.
    assert state == [("SM0", True, 1), ("SM1", True, 0), ("SM2", True, 0)]
    assert pending_count() == 3
