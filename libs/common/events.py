"""Event contracts: the envelope, one typed payload per event type, and who consumes what.

This module is the single place where the shape of every event and its subscribers are defined.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    MESSAGE_RECEIVED = "message.received"
    SEARCH_REQUESTED = "search.requested"
    SEARCH_COMPLETED = "search.completed"
    AI_RESPONSE = "ai.response"
    REPLY_READY = "reply.ready"
    MESSAGE_SENT = "message.sent"
    MESSAGE_STATUS = "message.status"
    MESSAGE_FAILED = "message.failed"
    USER_ERASED = "user.erased"
    RETENTION_DUE = "retention.due"
    REDACTION_DUE = "redaction.due"
    REPO_INDEX_REQUESTED = "repo.index_requested"


class Service(StrEnum):
    GATEWAY = "gateway"
    PROCESSOR = "processor"
    CODE_SEARCH = "code_search"
    AI_ENGINE = "ai_engine"
    ANALYTICS = "analytics"


# The one table of which services consume which event; publish() sends one task per subscriber.
SUBSCRIPTIONS: dict[EventType, tuple[Service, ...]] = {
    EventType.MESSAGE_RECEIVED: (Service.PROCESSOR, Service.ANALYTICS),
    EventType.SEARCH_REQUESTED: (Service.CODE_SEARCH, Service.ANALYTICS),
    EventType.SEARCH_COMPLETED: (Service.AI_ENGINE, Service.ANALYTICS),
    EventType.AI_RESPONSE: (Service.PROCESSOR, Service.ANALYTICS),
    EventType.REPLY_READY: (Service.GATEWAY, Service.ANALYTICS),
    EventType.MESSAGE_SENT: (Service.ANALYTICS,),
    EventType.MESSAGE_STATUS: (Service.ANALYTICS,),
    EventType.MESSAGE_FAILED: (Service.PROCESSOR, Service.ANALYTICS),  # processor apologises
    EventType.USER_ERASED: (Service.AI_ENGINE, Service.ANALYTICS),  # the gateway and processor erased first
    # Beat's call to remove personal data older than the window: each service prunes its own tables.
    EventType.RETENTION_DUE: (Service.GATEWAY, Service.PROCESSOR, Service.AI_ENGINE, Service.ANALYTICS),
    EventType.REDACTION_DUE: (Service.GATEWAY, Service.ANALYTICS),  # TWILIO_REDACT_BODIES: blank a body at Twilio
    # The repository catalog changed (add, re-index, git push): a code_search replica starts converging at
    # once. Only one replica of the queue gets it; the others catch up on their periodic reconcile.
    EventType.REPO_INDEX_REQUESTED: (Service.CODE_SEARCH, Service.ANALYTICS),
}


# Subscribers that take their copies in batches: each process gathers them for a few milliseconds and
# sends one task. Analytics sees every event without costing the turn a broker message per event.
BATCHED_SUBSCRIBERS: frozenset[Service] = frozenset({Service.ANALYTICS})

# Services whose handlers mostly wait (the LLM providers, ripgrep, Twilio): the events one task carries to them
# (see bus.coalescing) run side by side, so a batch never makes one event wait for another's network call. The
# others (the processor: short database transactions) run a batch's events in turn.
CONCURRENT_ITEMS: frozenset[Service] = frozenset({Service.AI_ENGINE, Service.CODE_SEARCH, Service.GATEWAY})


def subscribers(event_type: EventType) -> tuple[Service, ...]:
    return SUBSCRIPTIONS.get(event_type, ())


def task_name(service: Service) -> str:
    """The Celery task that receives every event for a service (sent by name: no shared code)."""
    return f"repotalk.{service.value}.handle"


def many_task_name(service: Service) -> str:
    """The Celery task that receives several events for a service in one message (see bus.coalescing)."""
    return f"repotalk.{service.value}.handle_many"


def batch_task_name(service: Service) -> str:
    """The Celery task that receives a list of events for a batched subscriber."""
    return f"repotalk.{service.value}.handle_batch"


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryItem(Payload):
    role: Literal["user", "assistant"]
    text: str


class MessageReceived(Payload):
    """An accepted inbound WhatsApp message. user_id is the keyed hash of the number, never the number."""

    message_sid: str
    user_id: str
    body: str
    num_media: int = 0
    received_at: datetime


SearchMode = Literal["question", "pattern"]


class SearchRequested(Payload):
    session_id: str
    user_id: str
    query: str
    mode: SearchMode = "question"
    repos: list[str] = Field(default_factory=list)  # empty: every indexed repository
    limit: int = 8
    history: list[HistoryItem] = Field(default_factory=list)


class Hit(Payload):
    repo: str
    path: str
    line: int
    end_line: int
    symbol: str | None = None
    kind: str | None = None  # function, class, method, text, match, ...
    language: str | None = None
    score: float = 0.0
    snippet: str = ""
    url: str | None = None  # permalink on the hosting site at the indexed commit (GitHub/GitLab remotes)

    @property
    def location(self) -> str:
        return f"{self.repo}/{self.path}:{self.line}"


class SearchCompleted(Payload):
    request: SearchRequested
    hits: list[Hit] = Field(default_factory=list)
    took_ms: float = 0.0
    kinds: list[str] = Field(default_factory=list)  # which rankers contributed: symbol, keyword, regex
    error: str | None = None  # a user-facing reason (invalid regex, no repository indexed, ...)


class AIAttempt(Payload):
    """One call to a model provider during a turn (a retry or a fallback is another attempt)."""

    provider: str  # openai, anthropic, local
    model: str
    outcome: str  # "ok", or a short failure reason: "HTTP 429", "timeout", "context too long", ...
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class AIResponse(Payload):
    session_id: str
    user_id: str
    question: str
    answer: str
    answerer: str  # openai, anthropic, local, offline, budget, pattern, no_results, search_error
    model: str | None = None
    citations: list[str] = Field(default_factory=list)
    # Summed over every paid call of the turn (an answer discarded for invented citations still costs).
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    fallback_reason: str | None = None  # why providers were left behind: "openai: HTTP 503; anthropic: timeout"
    retries: int = 0  # calls repeated on the same provider (transient errors, a trimmed context)
    fallbacks: int = 0  # providers given up (failed or cooling down) before the answer
    provider_ms: float = 0.0  # time spent waiting on providers (calls and backoff); the rest is the engine's
    attempts: list[AIAttempt] = Field(default_factory=list)


ReplyKind = Literal["answer", "command", "notice", "error"]


class ReplyReady(Payload):
    user_id: str
    body: str
    kind: ReplyKind = "answer"
    # /delete: the gateway sends this confirmation, then erases what it holds of the user (address
    # included) and announces user.erased. Ordering comes for free: nothing is erased before the send.
    erase_user_after: bool = False


class MessageSent(Payload):
    user_id: str
    chunk_index: int
    chunk_count: int
    provider_sid: str
    channel: Literal["twilio", "sandbox"]
    template: bool = False


class MessageStatus(Payload):
    provider_sid: str
    status: str
    error_code: str | None = None


class MessageFailed(Payload):
    user_id: str | None = None
    stage: str  # which step failed: send, search, ai, ...
    reason: str
    error_code: str | None = None


class UserErased(Payload):
    user_id: str


class RetentionDue(Payload):
    """Personal data created before ``cutoff`` is to be removed (anonymous aggregates stay)."""

    cutoff: datetime
    days: int


class RedactionDue(Payload):
    """A message whose body Twilio still holds (an inbound one stored, or a reply delivered) is to be
    blanked there; its id at Twilio is all this carries."""

    message_sid: str
    direction: Literal["inbound", "outbound"]


class RepoIndexRequested(Payload):
    """The desired state of a repository moved to ``generation`` (the catalog in the database holds it;
    this only says "look now"). Nothing in it is personal data."""

    repo: str
    generation: int
    reason: Literal["add", "reindex", "push"]


PAYLOADS: dict[EventType, type[Payload]] = {
    EventType.MESSAGE_RECEIVED: MessageReceived,
    EventType.SEARCH_REQUESTED: SearchRequested,
    EventType.SEARCH_COMPLETED: SearchCompleted,
    EventType.AI_RESPONSE: AIResponse,
    EventType.REPLY_READY: ReplyReady,
    EventType.MESSAGE_SENT: MessageSent,
    EventType.MESSAGE_STATUS: MessageStatus,
    EventType.MESSAGE_FAILED: MessageFailed,
    EventType.USER_ERASED: UserErased,
    EventType.RETENTION_DUE: RetentionDue,
    EventType.REDACTION_DUE: RedactionDue,
    EventType.REPO_INDEX_REQUESTED: RepoIndexRequested,
}


def _now() -> datetime:
    return datetime.now(UTC)


_NO_TRACE = {"trace"}  # an envelope without trace context serialises as it always did


class Envelope(BaseModel):
    """What travels on the bus. correlation_id is the inbound MessageSid and follows the whole turn."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: EventType
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str
    source: str = ""
    payload: dict[str, Any]
    # W3C traceparent of the span that caused the event, for an event that waits in the gateway's outbox
    # (the request is over when it is published). On the bus itself, trace context rides in task headers.
    trace: str | None = None

    @classmethod
    def new(cls, payload: Payload, correlation_id: str, source: str = "", event_id: str | None = None,
            trace: str | None = None) -> Envelope:
        event_type = next(t for t, model in PAYLOADS.items() if isinstance(payload, model))
        fields: dict[str, Any] = {
            "type": event_type,
            "correlation_id": correlation_id,
            "source": source,
            "payload": payload.model_dump(mode="json"),
        }
        if event_id:
            fields["id"] = event_id
        if trace:
            fields["trace"] = trace
        return cls(**fields)

    def data(self) -> Payload:
        """The payload as its typed model (validated)."""
        return PAYLOADS[self.type].model_validate(self.payload)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=_NO_TRACE if self.trace is None else None)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Envelope:
        return cls.model_validate(raw)


def derived_id(correlation_id: str, event_type: EventType, suffix: str = "") -> str:
    """A deterministic event id: a redelivered handler re-publishes the *same* event, so consumers dedupe."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"repotalk:{correlation_id}:{event_type.value}:{suffix}").hex
