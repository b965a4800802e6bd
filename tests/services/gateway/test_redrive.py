"""Turns whose events a broker restart lost are published again, once per threshold, until answered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, update

from libs.common import bus, db
from libs.common.events import Envelope, MessageReceived, MessageStatus, Service
from services.gateway.outbox import add_to_outbox, pending_count, relay_once
from services.gateway.redrive import RedriveSchedule
from services.gateway.sql import OUTBOUND, OUTBOX

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _received(sid: str) -> Envelope:
    payload = MessageReceived(message_sid=sid, user_id="u_1", body="hi", received_at=T0)
    return Envelope.new(payload, correlation_id=sid, source=Service.GATEWAY.value)


def _published_at(sid: str, when: datetime) -> None:
    with db.session_scope() as session:
        session.execute(update(OUTBOX).where(OUTBOX.c.correlation_id == sid).values(published_at=when, created_at=when))


def _answer(sid: str) -> None:
    with db.session_scope() as session:
        session.execute(insert(OUTBOUND).values(
            reply_id=f"r{sid}", correlation_id=sid, chunk_index=0, chunk_count=1, user_id="u_1", body_enc="x",
            channel="sandbox", status="sent", attempts=1, created_at=T0, updated_at=T0,
        ))


def _sweep(schedule: RedriveSchedule, now: datetime) -> int:
    with db.get_engine().begin() as conn:
        return schedule.sweep(conn, now)


def test_only_unanswered_turns_past_the_threshold_are_published_again(gateway_db: str) -> None:
    events = {sid: _received(sid) for sid in ("SMlost", "SManswered", "SMrecent", "SMancient")}
    with db.session_scope() as session:
        for event in events.values():
            add_to_outbox(session, event)
        status = MessageStatus(provider_sid="SMout", status="delivered")
        add_to_outbox(session, Envelope.new(status, correlation_id="SMstatus", source=Service.GATEWAY.value))
    with bus.capture_published():
        relay_once()
    _published_at("SMlost", T0 - timedelta(seconds=200))
    _published_at("SManswered", T0 - timedelta(seconds=200))
    _published_at("SMstatus", T0 - timedelta(seconds=200))  # not a turn's event: never re-driven
    _published_at("SMrecent", T0 - timedelta(seconds=30))  # may still be on its way
    _published_at("SMancient", T0 - timedelta(hours=2))  # given up on
    _answer("SManswered")

    schedule = RedriveSchedule(after=120, max_age=1800)
    assert _sweep(schedule, T0) == 1
    assert pending_count() == 1
    with bus.capture_published() as sent:
        assert relay_once() == 1
    # The very envelope (same id): every consumer recognises it and resumes the turn, never starts another.
    assert sent == [events["SMlost"]]

    # The next sweep does not look at the same rows again; the recent one crosses the threshold later.
    assert _sweep(schedule, T0 + timedelta(seconds=1)) == 0
    assert _sweep(schedule, T0 + timedelta(seconds=95)) == 1


def test_a_redriven_turn_is_redriven_again_only_after_another_threshold_and_stops_once_answered(
    gateway_db: str,
) -> None:
    with db.session_scope() as session:
        add_to_outbox(session, _received("SMquiet"))
    with bus.capture_published():
        relay_once()
    _published_at("SMquiet", T0 - timedelta(seconds=121))
    schedule = RedriveSchedule(after=120, max_age=1800)
    assert _sweep(schedule, T0) == 1
    with bus.capture_published():
        relay_once()
    republished = T0 + timedelta(seconds=1)
    with db.session_scope() as session:
        session.execute(update(OUTBOX).where(OUTBOX.c.correlation_id == "SMquiet").values(published_at=republished))
    assert _sweep(schedule, T0 + timedelta(seconds=60)) == 0
    _answer("SMquiet")
    assert _sweep(schedule, T0 + timedelta(seconds=200)) == 0
    assert pending_count() == 0
