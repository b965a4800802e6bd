"""Helpers for the processor's tests: build inbound events, run a handler with publishing captured,
and look at what the processor stored."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from libs.common import bus
from libs.common.db import session_scope
from libs.common.events import (
    AIResponse,
    Envelope,
    EventType,
    MessageFailed,
    MessageReceived,
    ReplyReady,
    SearchRequested,
)
from libs.common.models.code_index import Repository
from libs.common.models.conversations import ChatSession, Turn
from services.processor import worker

ALICE = "u_" + "a1" * 20
BOB = "u_" + "b2" * 20


def received(sid: str, body: str, user: str = ALICE, num_media: int = 0) -> Envelope:
    payload = MessageReceived(
        message_sid=sid, user_id=user, body=body, num_media=num_media, received_at=datetime.now(UTC)
    )
    return Envelope.new(payload, correlation_id=sid, source="gateway")


def ai_response(
    sid: str, answer: str, user: str = ALICE, citations: Sequence[str] = (), answerer: str = "offline"
) -> Envelope:
    payload = AIResponse(
        session_id="", user_id=user, question="", answer=answer, answerer=answerer, citations=list(citations)
    )
    return Envelope.new(payload, correlation_id=sid, source="ai_engine")


def failed(sid: str, stage: str, user: str | None = ALICE) -> Envelope:
    payload = MessageFailed(user_id=user, stage=stage, reason="ProviderError")
    return Envelope.new(payload, correlation_id=sid, source=stage)


def deliver(envelope: Envelope) -> list[Envelope]:
    """Run the processor's handler for the event and return what it published."""
    with bus.capture_published() as published:
        worker.HANDLERS[envelope.type](envelope)
    return list(published)


def only(events: list[Envelope], event_type: EventType) -> Envelope:
    assert [e.type for e in events] == [event_type], [e.type for e in events]
    return events[0]


def reply_of(events: list[Envelope]) -> ReplyReady:
    data = only(events, EventType.REPLY_READY).data()
    assert isinstance(data, ReplyReady)
    return data


def search_of(events: list[Envelope]) -> SearchRequested:
    data = only(events, EventType.SEARCH_REQUESTED).data()
    assert isinstance(data, SearchRequested)
    return data


def say(body: str, user: str = ALICE, sid: str | None = None) -> list[Envelope]:
    return deliver(received(sid or new_sid(), body, user))


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def ask_and_answer(question: str, answer: str, user: str = ALICE) -> str:
    """A full exchange; returns its MessageSid."""
    sid = new_sid()
    search_of(deliver(received(sid, question, user)))
    reply_of(deliver(ai_response(sid, answer, user)))
    return sid


def add_repo(name: str, files: int = 10, symbols: int = 100, status: str = "ready") -> None:
    with session_scope() as db:
        db.add(Repository(name=name, root=f"/srv/{name}", status=status, file_count=files, symbol_count=symbols))


def turn(sid: str) -> Turn | None:
    with session_scope() as db:
        return db.get(Turn, sid)


def turns_of(user: str) -> list[Turn]:
    with session_scope() as db:
        return list(db.scalars(select(Turn).where(Turn.user_id == user).order_by(Turn.created_at)).all())


def sessions_of(user: str) -> list[ChatSession]:
    with session_scope() as db:
        return list(
            db.scalars(select(ChatSession).where(ChatSession.user_id == user).order_by(ChatSession.created_at)).all()
        )


def active_sessions(user: str) -> list[ChatSession]:
    return [chat for chat in sessions_of(user) if chat.ended_at is None]


def make_idle(session_id: str, minutes: float) -> None:
    """Move a session's last activity into the past (instead of waiting)."""
    with session_scope() as db:
        chat = db.get(ChatSession, session_id)
        assert chat is not None
        chat.last_activity_at = chat.last_activity_at - timedelta(minutes=minutes)
