"""Batches: a whole batch recorded at once gives exactly what recording its events one by one gives."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.exc import OperationalError

from libs.common import bus, db
from libs.common.events import Envelope, EventType, MessageFailed, MessageStatus, UserErased
from libs.common.models.analytics import AnalyticsEvent, ErasedUser, SearchQuery, TurnMetrics
from services.analytics import worker
from services.analytics.merge import COLUMNS, DERIVED, TurnState
from services.analytics.recorder import record, record_batch
from services.analytics.summary import summary
from tests.services.analytics.turns import Turn, all_events, event, scenario

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WAITING_FOR_ADVISORY_LOCK = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")


def traffic(seed: int) -> list[Envelope]:
    """The scenario's events and more (several chunks, a lost chunk, callbacks that change nothing, our own
    failure, a user erased in the middle, late events of that user), scrambled, with a tenth delivered
    twice: close together (same batch) or far apart (an event recorded long before)."""
    rng = random.Random(seed)
    turns = scenario(T0)
    chunks = Turn("SM20", "u_zed", T0 - timedelta(minutes=3)).received().search(20, 90, 4, 60).ai(900, "openai", 10, 5)
    chunks.reply(950).sent(1200, 1300, 1400).status(1500, "delivered").status(1600, "failed", "30008")
    turns["SM20"] = chunks
    events = all_events(turns)
    events.append(event(MessageFailed(user_id="u_zed", stage="analytics", reason="OperationalError"), "SM20",
                        T0 - timedelta(minutes=2), "analytics", "analytics"))
    events.append(event(MessageStatus(provider_sid="SMx", status="read"), "SM2", T0 - timedelta(minutes=30),
                        "gateway", "read"))
    rng.shuffle(events)
    erased = event(UserErased(user_id="u_alice"), "SMdelete", T0, "gateway")
    events.insert(len(events) // 2, erased)
    # Right after the erasure, a new turn of the erased user (events of her older turns fall on both sides).
    late = Turn("SM40", "u_alice", T0 - timedelta(minutes=1)).received().reply(10, kind="command").sent(50)
    events[len(events) // 2 + 1:len(events) // 2 + 1] = late.events
    for original in rng.sample(events, len(events) // 10):
        events.insert(rng.randrange(len(events) + 1), original)
    return events


def batches_of(events: list[Envelope], seed: int) -> list[list[Envelope]]:
    rng = random.Random(seed)
    batches, start = [], 0
    while start < len(events):
        size = rng.choice((1, 2, 5, 12, 30, 60))
        batches.append(events[start:start + size])
        start += size
    return batches


def snapshot() -> dict[str, Any]:
    """Everything analytics stores (but surrogate keys and arrival times) and what the summary says."""
    def rows(*columns: Any) -> list[tuple[Any, ...]]:
        with db.session_scope() as session:
            return [tuple(row) for row in session.execute(select(*columns).order_by(*columns[:1]))]

    def columns(model: Any, *skip: str) -> list[Any]:
        return [c for c in model.__table__.columns if c.name not in skip]

    return {
        "turns": rows(*columns(TurnMetrics)),
        "searches": rows(*columns(SearchQuery, "id")),
        "events": rows(*columns(AnalyticsEvent, "id", "received_at")),
        "erased": rows(ErasedUser.user_hash),
        "summary": summary(24, now=T0),
        "summary_48h": summary(48, now=T0),
    }


def wipe() -> None:
    with db.session_scope() as session:
        for model in (TurnMetrics, SearchQuery, AnalyticsEvent, ErasedUser):
            session.execute(delete(model))


def one_by_one(events: list[Envelope]) -> None:
    for envelope in events:
        worker.HANDLERS[envelope.type](envelope)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_records_what_one_by_one_recording_does(database: str, seed: int) -> None:
    events = traffic(seed)
    one_by_one(events)
    expected = snapshot()
    assert expected["turns"] and expected["searches"] and expected["erased"]
    wipe()
    for batch in batches_of(events, seed):
        worker.BATCH_HANDLER(batch)
    assert snapshot() == expected


def test_record_batch_counts_new_events_once(database: str) -> None:
    events = all_events(scenario(T0))
    first, rest = events[:20], events[20:]
    assert record_batch(first + first[:5]) == 20  # duplicates within the batch count once
    assert record_batch(first[10:] + rest + rest[:3]) == len(rest)  # and so do those recorded before
    assert record_batch(events) == 0
    assert record_batch([]) == 0
    assert not record(events[0])
    with db.session_scope() as session:
        assert len(session.scalars(select(AnalyticsEvent.event_id)).all()) == len(events)


def test_turn_state_has_the_columns_of_the_table() -> None:
    assert [f.name for f in fields(TurnState)] == list(COLUMNS)
    assert COLUMNS[-len(DERIVED):] == DERIVED  # what the merge reads and writes back comes first
    assert set(COLUMNS) == {c.name for c in TurnMetrics.__table__.columns}


def test_concurrent_batches_of_the_same_turns_lose_no_update(database: str) -> None:
    busy = Turn("SM30", "u_zed", T0 - timedelta(minutes=1)).received().search(10, 20, 2, 5).ai(30, "offline")
    busy.reply(40).sent(*[100 + 10 * i for i in range(12)])
    events = traffic(5) + busy.events
    one_by_one(events)
    expected = snapshot()
    wipe()
    # Four workers take batches mixing the same turns' events, every event delivered to two of them.
    copies = events * 2
    random.Random(11).shuffle(copies)
    shares = [batches_of(copies[i::4], seed=i) for i in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(batches: list[list[Envelope]]) -> None:
        try:
            barrier.wait()
            for batch in batches:
                worker.BATCH_HANDLER(batch)
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with db.session_scope() as session:
        row = session.get(TurnMetrics, "SM30")
        assert row is not None
        assert (row.chunks_sent, row.chunk_count, row.status, row.e2e_ms) == (12, 12, "answered", 210)
        assert session.get(TurnMetrics, "SM40").user_id is None  # type: ignore[union-attr]
    # These events give the same result in any order (the erased user stays unlinked either way).
    assert snapshot() == expected


def test_a_malformed_event_costs_only_itself(database: str, caplog: pytest.LogCaptureFixture) -> None:
    events = Turn("SM50", "u_zed", T0 - timedelta(minutes=1)).received().search(10, 20, 2, 5).reply(40).events
    broken = Envelope(type=EventType.AI_RESPONSE, correlation_id="SM50", source="ai_engine",
                      payload={"answer": "no session, no answerer"})
    worker.BATCH_HANDLER([events[0], broken, *events[1:]])
    with db.session_scope() as session:
        row = session.get(TurnMetrics, "SM50")
        assert row is not None
        assert (row.status, row.search_ms, row.ai_response_at) == ("answered", 10, None)
        recorded = set(session.scalars(select(AnalyticsEvent.event_id)))
    assert recorded == {e.id for e in events}
    assert "could not record ai.response event" in caplog.text


def test_a_transient_failure_is_left_to_the_bus_to_retry(base_env: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def database_down(envelopes: list[Envelope]) -> int:
        raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))

    monkeypatch.setattr(worker, "record_batch", database_down)
    with pytest.raises(OperationalError):
        worker.BATCH_HANDLER(all_events(scenario(T0))[:3])


def test_batches_arrive_through_the_bus(database: str) -> None:
    app = bus.get_celery()
    bus.register_service(app, worker.SERVICE, worker.HANDLERS, worker.BATCH_HANDLER)
    consumer = bus.EmbeddedWorker(app, worker.SERVICE)
    consumer.start()
    try:
        turns = scenario(T0)
        for envelope in all_events(turns):
            bus.publish(envelope)
        bus.flush_batches()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and summary(48, now=T0)["turns"]["received"] < 10:
            time.sleep(0.05)
    finally:
        consumer.stop()
    result = summary(48, now=T0)
    assert result["turns"]["received"] == 10
    assert result["turns"]["answered"] == 5


def test_linking_a_user_waits_for_an_erasure_in_progress(pg_database: str) -> None:
    """The race the advisory lock closes: a batch that would link a user to a turn while another batch
    erases that user (its UPDATE already past the turn, its commit not yet done) must wait for the
    erasure and then leave the turn unlinked."""
    from services.analytics import recorder

    erasure = event(UserErased(user_id="u_alice"), "SMdelete", T0, "gateway")
    first = Turn("SM60", "u_alice", T0 - timedelta(minutes=1)).received().events
    linked: list[BaseException | None] = []
    engine = db.get_engine()
    with engine.connect() as eraser, engine.connect() as observer:
        # A batch erasing u_alice, stopped before its commit.
        transaction = eraser.begin()
        store = recorder._store(eraser)
        claim = (erasure.id, erasure.type.value, erasure.correlation_id, erasure.source, erasure.occurred_at, T0)
        assert store.claim(eraser, [claim], erasing=True) == {erasure.id}
        store.erase(eraser, "u_alice")

        def link() -> None:
            try:
                worker.BATCH_HANDLER(first)
                linked.append(None)
            except BaseException as exc:  # reported below
                linked.append(exc)

        thread = threading.Thread(target=link)
        thread.start()
        deadline = time.monotonic() + 20
        while thread.is_alive() and time.monotonic() < deadline:
            waiting = observer.execute(WAITING_FOR_ADVISORY_LOCK).scalar_one()
            observer.rollback()
            if waiting:
                break
            time.sleep(0.01)
        transaction.commit()
        thread.join(20)
    assert linked == [None]
    with db.session_scope() as session:
        row = session.get(TurnMetrics, "SM60")
        assert row is not None and row.received_at is not None
        assert row.user_id is None


def test_only_bookkeeping_skips_waiting_for_the_disk(pg_database: str) -> None:
    """A batch's commit does not wait for the WAL on Postgres, but one that erases a user does."""
    from services.analytics import recorder

    erasure = event(UserErased(user_id="u_alice"), "SMdelete", T0, "gateway")
    received = Turn("SM70", "u_bob", T0).received().events[0]
    for envelope, erasing, expected in ((received, False, "off"), (erasure, True, "on")):
        with db.get_engine().connect() as connection, connection.begin():
            claim = (envelope.id, envelope.type.value, envelope.correlation_id, envelope.source, T0, T0)
            assert recorder._store(connection).claim(connection, [claim], erasing) == {envelope.id}
            assert connection.execute(text("SHOW synchronous_commit")).scalar_one() == expected
