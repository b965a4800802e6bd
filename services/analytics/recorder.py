"""Recording events: one short transaction per event, idempotent, order-independent.

Each event is claimed by its id in ``analytics_events`` (a duplicate stops there), then merged into
its turn's row under a row lock: the row is created if missing (INSERT .. ON CONFLICT DO NOTHING),
locked (SELECT .. FOR UPDATE on Postgres; SQLite already holds its single write lock after the
insert), merged with min/max/first-wins rules that give the same result in any arrival order, and
its status and durations recomputed from the merged row. Concurrent events of one turn serialise on
the row, so no update is lost.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from libs.common import db
from libs.common.events import (
    AIResponse,
    Envelope,
    EventType,
    MessageFailed,
    MessageReceived,
    MessageSent,
    MessageStatus,
    Payload,
    ReplyReady,
    SearchCompleted,
    SearchRequested,
    Service,
    UserErased,
)
from libs.common.models.analytics import AnalyticsEvent, ErasedUser, SearchQuery, TurnMetrics

log = logging.getLogger(__name__)

ANSWERED = "answered"
FAILED = "failed"
RATE_LIMITED = "rate_limited"
COMMAND = "command"
PENDING = "pending"
STATUSES = (ANSWERED, FAILED, RATE_LIMITED, COMMAND, PENDING)

# Twilio statuses after which a chunk will never arrive.
UNDELIVERED = frozenset({"failed", "undelivered"})
REASON_CHARS = 200


def _insert(session: Session, model: type[Any]) -> Any:
    """INSERT with ON CONFLICT support for the session's backend."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


def record(envelope: Envelope) -> bool:
    """Record one event. False when it was already recorded (a redelivery)."""
    payload = envelope.data()
    with db.session_scope() as session:
        claimed = session.execute(
            _insert(session, AnalyticsEvent)
            .values(
                event_id=envelope.id,
                type=envelope.type.value,
                correlation_id=envelope.correlation_id,
                source=envelope.source[:32],
                occurred_at=envelope.occurred_at,
                received_at=db.utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(AnalyticsEvent.id)
        ).scalar_one_or_none()
        if claimed is None:
            return False
        apply = APPLY.get(envelope.type)
        if apply is not None:
            apply(session, envelope, payload)
    return True


# -- turns -----------------------------------------------------------------------------------------


def _turn(session: Session, envelope: Envelope) -> TurnMetrics | None:
    session.execute(
        _insert(session, TurnMetrics)
        .values(correlation_id=envelope.correlation_id, started_at=envelope.occurred_at, status=PENDING)
        .on_conflict_do_nothing(index_elements=["correlation_id"])
    )
    return session.execute(
        select(TurnMetrics)
        .where(TurnMetrics.correlation_id == envelope.correlation_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _latest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def _attach_user(session: Session, turn: TurnMetrics, user_id: str | None) -> None:
    if turn.user_id is not None or not user_id:
        return
    erased = session.get(ErasedUser, user_hash(user_id))
    if erased is None:
        turn.user_id = user_id


def _fail(turn: TurnMetrics, stage: str, reason: str, at: datetime) -> None:
    """Keep the earliest failure of the turn, whichever order the failures arrive in."""
    turn.failed = True
    if turn.error_at is None or at < turn.error_at:
        turn.error_stage = stage[:32]
        turn.error_reason = reason[:REASON_CHARS]
        turn.error_at = at


def status_of(turn: TurnMetrics) -> str:
    if turn.failed or turn.reply_kind == "error":
        return FAILED
    # The gateway answers a rate-limited message itself with a notice and publishes no message.received.
    if turn.rate_limited or (turn.reply_kind == "notice" and turn.received_at is None):
        return RATE_LIMITED
    if turn.ai_response_at is not None or turn.reply_kind == "answer":
        return ANSWERED
    if turn.reply_kind in ("command", "notice"):
        return COMMAND
    return PENDING


def derive(turn: TurnMetrics) -> None:
    """Status and durations from the merged row (the same whatever order the events came in)."""
    turn.status = status_of(turn)
    all_sent = turn.chunk_count is not None and (turn.chunks_sent or 0) >= turn.chunk_count
    last_sent = turn.last_sent_at if all_sent else None
    turn.e2e_ms = _ms(turn.received_at, last_sent)
    turn.queue_ms = _ms(turn.received_at, turn.search_requested_at)
    turn.search_ms = _ms(turn.search_requested_at, turn.search_completed_at)
    turn.ai_ms = _ms(turn.search_completed_at, turn.ai_response_at)
    turn.persist_ms = _ms(turn.ai_response_at, turn.reply_ready_at)
    turn.send_ms = _ms(turn.reply_ready_at, last_sent)


def _on_received(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageReceived)
    turn = _turn(session, envelope)
    assert turn is not None
    turn.received_at = _earliest(turn.received_at, payload.received_at)
    turn.started_at = turn.received_at
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _touch(turn: TurnMetrics, envelope: Envelope) -> None:
    """Without the webhook time yet, a turn starts at its earliest event."""
    if turn.received_at is None:
        turn.started_at = _earliest(turn.started_at, envelope.occurred_at)


def _on_search_requested(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, SearchRequested)
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    turn.search_requested_at = _earliest(turn.search_requested_at, envelope.occurred_at)
    turn.search_mode = payload.mode
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _on_search_completed(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, SearchCompleted)
    kinds = ",".join(sorted(set(payload.kinds)))[:64]
    session.add(SearchQuery(
        event_id=envelope.id,
        correlation_id=envelope.correlation_id,
        mode=payload.request.mode,
        kinds=kinds,
        repo_count=len(payload.request.repos),
        result_count=len(payload.hits),
        took_ms=payload.took_ms,
        error=payload.error[:REASON_CHARS] if payload.error else None,
        occurred_at=envelope.occurred_at,
    ))
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    turn.search_completed_at = _earliest(turn.search_completed_at, envelope.occurred_at)
    turn.search_mode = payload.request.mode
    turn.search_kinds = kinds
    turn.hit_count = len(payload.hits)
    turn.search_took_ms = payload.took_ms
    _attach_user(session, turn, payload.request.user_id)
    derive(turn)


def _on_ai_response(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, AIResponse)
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    turn.ai_response_at = _earliest(turn.ai_response_at, envelope.occurred_at)
    turn.answerer = payload.answerer[:32]
    turn.model = payload.model[:64] if payload.model else None
    turn.input_tokens = payload.input_tokens
    turn.output_tokens = payload.output_tokens
    turn.cost_usd = payload.cost_usd
    turn.ai_latency_ms = payload.latency_ms
    turn.fallback_reason = payload.fallback_reason[:REASON_CHARS] if payload.fallback_reason else None
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _on_reply_ready(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, ReplyReady)
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    turn.reply_ready_at = _earliest(turn.reply_ready_at, envelope.occurred_at)
    # An apology after a failure must win over the answer it replaces, whichever arrives first.
    if turn.reply_kind is None or payload.kind == "error":
        turn.reply_kind = payload.kind
    if payload.kind == "notice" and envelope.source == Service.GATEWAY.value:
        turn.rate_limited = True
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _on_sent(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageSent)
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    turn.chunks_sent = (turn.chunks_sent or 0) + 1
    turn.chunk_count = max(turn.chunk_count or 0, payload.chunk_count)
    turn.first_sent_at = _earliest(turn.first_sent_at, envelope.occurred_at)
    turn.last_sent_at = _latest(turn.last_sent_at, envelope.occurred_at)
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _on_status(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageStatus)
    if payload.status not in UNDELIVERED:
        return
    # The gateway correlates a status callback with the turn whose chunk it reports; it can be
    # recorded before the turn's other events, so it may create the row like any of them.
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    reason = payload.status + (f" ({payload.error_code})" if payload.error_code else "")
    _fail(turn, "delivery", reason, envelope.occurred_at)
    derive(turn)


def _on_failed(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageFailed)
    if payload.stage == Service.ANALYTICS.value:
        # Our own failure to record an event says nothing about the user's turn.
        log.warning("analytics failed on an event of %s: %s", envelope.correlation_id, payload.reason)
        return
    turn = _turn(session, envelope)
    assert turn is not None
    _touch(turn, envelope)
    reason = payload.reason + (f" ({payload.error_code})" if payload.error_code else "")
    _fail(turn, payload.stage, reason, envelope.occurred_at)
    _attach_user(session, turn, payload.user_id)
    derive(turn)


def _on_user_erased(session: Session, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, UserErased)
    erase_user(session, payload.user_id)


def erase_user(session: Session, user_id: str) -> int:
    """Forget which turns were the user's (the anonymous counts stay). Returns rows anonymised."""
    session.execute(
        _insert(session, ErasedUser)
        .values(user_hash=user_hash(user_id), erased_at=db.utcnow())
        .on_conflict_do_nothing(index_elements=["user_hash"])
    )
    result = session.execute(
        update(TurnMetrics).where(TurnMetrics.user_id == user_id).values(user_id=None)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    log.info("anonymised %d analytics turn(s) of an erased user", count)
    return count


APPLY: dict[EventType, Callable[[Session, Envelope, Payload], None]] = {
    EventType.MESSAGE_RECEIVED: _on_received,
    EventType.SEARCH_REQUESTED: _on_search_requested,
    EventType.SEARCH_COMPLETED: _on_search_completed,
    EventType.AI_RESPONSE: _on_ai_response,
    EventType.REPLY_READY: _on_reply_ready,
    EventType.MESSAGE_SENT: _on_sent,
    EventType.MESSAGE_STATUS: _on_status,
    EventType.MESSAGE_FAILED: _on_failed,
    EventType.USER_ERASED: _on_user_erased,
}
