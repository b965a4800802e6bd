"""How events change a turn's metrics: the merge rules, on plain rows in memory (no database here).

A Replay holds the rows of the turns a group of new events touches (loaded and locked by the recorder),
applies the events to them one after the other exactly as if each had been recorded on its own, and
says what to write back: the changed rows, the searches, the erasures. Timestamps keep the earliest
(or, for the last chunk, the latest) value and failures the earliest, so a turn ends up the same in any
arrival order; status and durations are derived from the merged row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from libs.common.events import (
    AIResponse,
    Envelope,
    EventType,
    MessageFailed,
    MessageReceived,
    MessageSent,
    MessageStatus,
    Payload,
    RedactionDue,
    ReplyReady,
    RepoIndexRequested,
    RetentionDue,
    SearchCompleted,
    SearchRequested,
    Service,
    UserErased,
)

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


@dataclass(slots=True)
class TurnState:
    """One analytics_turns row as plain values: the columns of TurnMetrics, merged ones first, then the
    ones derived from them."""

    correlation_id: str
    user_id: str | None
    started_at: datetime
    received_at: datetime | None = None
    search_requested_at: datetime | None = None
    search_completed_at: datetime | None = None
    ai_response_at: datetime | None = None
    reply_ready_at: datetime | None = None
    first_sent_at: datetime | None = None
    last_sent_at: datetime | None = None
    reply_kind: str | None = None
    rate_limited: bool = False
    chunks_sent: int = 0
    chunk_count: int | None = None
    search_mode: str | None = None
    search_kinds: str | None = None
    hit_count: int | None = None
    search_took_ms: float | None = None
    answerer: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    ai_latency_ms: float | None = None
    fallback_reason: str | None = None
    ai_retries: int = 0
    ai_fallbacks: int = 0
    failed: bool = False
    error_stage: str | None = None
    error_reason: str | None = None
    error_at: datetime | None = None
    status: str = PENDING
    e2e_ms: float | None = None
    queue_ms: float | None = None
    search_ms: float | None = None
    ai_ms: float | None = None
    persist_ms: float | None = None
    send_ms: float | None = None


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TurnState))
DERIVED = ("status", "e2e_ms", "queue_ms", "search_ms", "ai_ms", "persist_ms", "send_ms")
MERGED = COLUMNS[: -len(DERIVED)]
values_of: Callable[[TurnState], tuple[Any, ...]] = attrgetter(*COLUMNS)
merged_values_of: Callable[[TurnState], tuple[Any, ...]] = attrgetter(*MERGED)
SEARCH_COLUMNS = (
    "event_id", "correlation_id", "mode", "kinds", "repo_count", "result_count", "took_ms", "error", "occurred_at"
)


def from_row(values: Sequence[Any]) -> TurnState:
    """A TurnState from a row's MERGED columns (the derived ones are recomputed before writing)."""
    return TurnState(*values)


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current


def _latest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000, 3)


def status_of(turn: TurnState) -> str:
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


def derive(turn: TurnState) -> None:
    """Status and durations from the merged row (the same whatever order the events came in)."""
    turn.status = status_of(turn)
    all_sent = turn.chunk_count is not None and turn.chunks_sent >= turn.chunk_count
    last_sent = turn.last_sent_at if all_sent else None
    turn.e2e_ms = _ms(turn.received_at, last_sent)
    turn.queue_ms = _ms(turn.received_at, turn.search_requested_at)
    turn.search_ms = _ms(turn.search_requested_at, turn.search_completed_at)
    turn.ai_ms = _ms(turn.search_completed_at, turn.ai_response_at)
    turn.persist_ms = _ms(turn.ai_response_at, turn.reply_ready_at)
    turn.send_ms = _ms(turn.reply_ready_at, last_sent)


def decode(envelope: Envelope) -> Payload:
    """The event's typed payload. Times without a zone are refused: they can be neither compared with
    the stored ones nor stored as UTC."""
    payload = envelope.data()
    if envelope.occurred_at.tzinfo is None or (
        isinstance(payload, MessageReceived) and payload.received_at.tzinfo is None
    ):
        raise ValueError(f"{envelope.type.value} event {envelope.id} has a time without a zone")
    return payload


def affects_turn(payload: Payload) -> bool:
    """Whether recording this event changes (and, if missing, creates) its turn's row."""
    if isinstance(payload, MessageStatus):
        return payload.status in UNDELIVERED
    if isinstance(payload, MessageFailed):
        # Our own failure to record an event says nothing about the user's turn.
        return payload.stage != Service.ANALYTICS.value
    return not isinstance(payload, UserErased | RetentionDue | RedactionDue | RepoIndexRequested)


def turn_user(payload: Payload) -> str | None:
    """The user an event links its turn to (status callbacks carry none)."""
    if isinstance(payload, SearchCompleted):
        return payload.request.user_id
    user_id = getattr(payload, "user_id", None)
    return user_id if isinstance(user_id, str) and user_id else None


class Replay:
    """New events applied in order to the rows they touch, as one-by-one recording would.

    ``turns`` must hold every row the events affect (``affects_turn``), as loaded under lock (or just
    created); ``erased`` the hashes of the erased users among the events' users.
    """

    def __init__(self, turns: dict[str, TurnState], erased: set[str]) -> None:
        self.turns = turns
        self.erased = erased
        self.touched: set[str] = set()
        self.searches: list[tuple[Any, ...]] = []  # analytics_searches rows, SEARCH_COLUMNS
        self.erasures: list[str] = []
        self.expiries: list[datetime] = []  # retention cutoffs: turns started before lose their user

    def apply(self, envelope: Envelope, payload: Payload) -> None:
        APPLY[envelope.type](self, envelope, payload)

    def changed(self, loaded: dict[str, tuple[Any, ...]]) -> list[TurnState]:
        """The touched rows whose merged values differ from those loaded, with their derived values."""
        rows = []
        for correlation_id in sorted(self.touched):
            turn = self.turns[correlation_id]
            if merged_values_of(turn) != loaded.get(correlation_id):
                derive(turn)
                rows.append(turn)
        return rows

    def turn(self, envelope: Envelope) -> TurnState:
        """The event's turn, touched."""
        turn = self.turns[envelope.correlation_id]
        self.touched.add(envelope.correlation_id)
        # Without the webhook time yet, a turn starts at its earliest event.
        if turn.received_at is None:
            turn.started_at = _earliest(turn.started_at, envelope.occurred_at)
        return turn

    def attach_user(self, turn: TurnState, user_id: str | None) -> None:
        if turn.user_id is None and user_id and user_hash(user_id) not in self.erased:
            turn.user_id = user_id

    def expire(self, cutoff: datetime) -> None:
        """Forget who the turns started before ``cutoff`` were (the retention job); their counts stay."""
        self.expiries.append(cutoff)
        for correlation_id, turn in self.turns.items():
            if turn.user_id is not None and turn.started_at < cutoff:
                turn.user_id = None
                self.touched.add(correlation_id)

    def erase(self, user_id: str) -> None:
        """Forget which turns were the user's; later events of the user do not bring the id back."""
        self.erased.add(user_hash(user_id))
        self.erasures.append(user_id)
        for correlation_id, turn in self.turns.items():
            if turn.user_id == user_id:
                turn.user_id = None
                self.touched.add(correlation_id)


def _fail(turn: TurnState, stage: str, reason: str, at: datetime) -> None:
    """Keep the earliest failure of the turn, whichever order the failures arrive in."""
    turn.failed = True
    if turn.error_at is None or at < turn.error_at:
        turn.error_stage = stage[:32]
        turn.error_reason = reason[:REASON_CHARS]
        turn.error_at = at


def _on_received(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageReceived)
    turn = replay.turn(envelope)
    turn.received_at = _earliest(turn.received_at, payload.received_at)
    turn.started_at = turn.received_at
    replay.attach_user(turn, payload.user_id)


def _on_search_requested(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, SearchRequested)
    turn = replay.turn(envelope)
    turn.search_requested_at = _earliest(turn.search_requested_at, envelope.occurred_at)
    turn.search_mode = payload.mode
    replay.attach_user(turn, payload.user_id)


def _on_search_completed(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, SearchCompleted)
    kinds = ",".join(sorted(set(payload.kinds)))[:64]
    replay.searches.append((
        envelope.id,
        envelope.correlation_id,
        payload.request.mode,
        kinds,
        len(payload.request.repos),
        len(payload.hits),
        payload.took_ms,
        payload.error[:REASON_CHARS] if payload.error else None,
        envelope.occurred_at,
    ))
    turn = replay.turn(envelope)
    turn.search_completed_at = _earliest(turn.search_completed_at, envelope.occurred_at)
    turn.search_mode = payload.request.mode
    turn.search_kinds = kinds
    turn.hit_count = len(payload.hits)
    turn.search_took_ms = payload.took_ms
    replay.attach_user(turn, payload.request.user_id)


def _on_ai_response(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, AIResponse)
    turn = replay.turn(envelope)
    turn.ai_response_at = _earliest(turn.ai_response_at, envelope.occurred_at)
    turn.answerer = payload.answerer[:32]
    turn.model = payload.model[:64] if payload.model else None
    turn.input_tokens = payload.input_tokens
    turn.output_tokens = payload.output_tokens
    turn.cost_usd = payload.cost_usd
    turn.ai_latency_ms = payload.latency_ms
    turn.fallback_reason = payload.fallback_reason[:REASON_CHARS] if payload.fallback_reason else None
    turn.ai_retries = payload.retries
    turn.ai_fallbacks = payload.fallbacks
    replay.attach_user(turn, payload.user_id)


def _on_reply_ready(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, ReplyReady)
    turn = replay.turn(envelope)
    turn.reply_ready_at = _earliest(turn.reply_ready_at, envelope.occurred_at)
    # An apology after a failure must win over the answer it replaces, whichever arrives first.
    if turn.reply_kind is None or payload.kind == "error":
        turn.reply_kind = payload.kind
    if payload.kind == "notice" and envelope.source == Service.GATEWAY.value:
        turn.rate_limited = True
    replay.attach_user(turn, payload.user_id)


def _on_sent(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageSent)
    turn = replay.turn(envelope)
    turn.chunks_sent += 1
    turn.chunk_count = max(turn.chunk_count or 0, payload.chunk_count)
    turn.first_sent_at = _earliest(turn.first_sent_at, envelope.occurred_at)
    turn.last_sent_at = _latest(turn.last_sent_at, envelope.occurred_at)
    replay.attach_user(turn, payload.user_id)


def _on_status(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageStatus)
    if not affects_turn(payload):
        return
    # The gateway correlates a status callback with the turn whose chunk it reports; it can be
    # recorded before the turn's other events, so it may create the row like any of them.
    turn = replay.turn(envelope)
    reason = payload.status + (f" ({payload.error_code})" if payload.error_code else "")
    _fail(turn, "delivery", reason, envelope.occurred_at)


def _on_failed(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, MessageFailed)
    if not affects_turn(payload):
        log.warning("analytics failed on an event of %s: %s", envelope.correlation_id, payload.reason)
        return
    turn = replay.turn(envelope)
    reason = payload.reason + (f" ({payload.error_code})" if payload.error_code else "")
    _fail(turn, payload.stage, reason, envelope.occurred_at)
    replay.attach_user(turn, payload.user_id)


def _on_user_erased(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, UserErased)
    replay.erase(payload.user_id)


def _on_retention_due(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    assert isinstance(payload, RetentionDue)
    replay.expire(payload.cutoff)


def _on_redaction_due(replay: Replay, envelope: Envelope, payload: Payload) -> None:
    """Counted in analytics_events only: it changes no turn."""


APPLY: dict[EventType, Callable[[Replay, Envelope, Payload], None]] = {
    EventType.MESSAGE_RECEIVED: _on_received,
    EventType.SEARCH_REQUESTED: _on_search_requested,
    EventType.SEARCH_COMPLETED: _on_search_completed,
    EventType.AI_RESPONSE: _on_ai_response,
    EventType.REPLY_READY: _on_reply_ready,
    EventType.MESSAGE_SENT: _on_sent,
    EventType.MESSAGE_STATUS: _on_status,
    EventType.MESSAGE_FAILED: _on_failed,
    EventType.USER_ERASED: _on_user_erased,
    EventType.RETENTION_DUE: _on_retention_due,
    EventType.REDACTION_DUE: _on_redaction_due,
    EventType.REPO_INDEX_REQUESTED: _on_redaction_due,  # counted only: no turn, no user
}
