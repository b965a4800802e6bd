"""Questions: persisted encrypted, sent to search with the session's scope and history, idempotent."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import pytest
from sqlalchemy import Connection

from libs.common import bus
from libs.common.db import get_engine
from libs.common.events import EventType, HistoryItem, derived_id
from libs.common.security import decrypt
from services.processor import lookup, sessions, worker
from tests.conftest import apply_env
from tests.services.processor.support import (
    ALICE,
    BOB,
    active_sessions,
    add_repo,
    ai_response,
    ask_and_answer,
    deliver,
    make_idle,
    new_sid,
    received,
    reply_of,
    say,
    search_of,
    sessions_of,
    turn,
    turns_of,
)


def test_question_publishes_one_search_request(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, SEARCH_RESULT_LIMIT="5")
    sid = new_sid()
    events = deliver(received(sid, "  where do we verify the Twilio signature?  "))

    envelope = events[0]
    request = search_of(events)
    assert envelope.id == derived_id(sid, EventType.SEARCH_REQUESTED)
    assert envelope.correlation_id == sid
    assert request.mode == "question"
    assert request.query == "where do we verify the Twilio signature?"
    assert request.user_id == ALICE
    assert request.repos == []
    assert request.limit == 5
    assert request.history == []
    [chat] = active_sessions(ALICE)
    assert request.session_id == chat.id

    stored = turn(sid)
    assert stored is not None
    assert stored.kind == "question" and stored.status == "searching"
    assert "Twilio" not in stored.question_enc  # encrypted at rest
    assert decrypt(stored.question_enc) == "where do we verify the Twilio signature?"


def test_history_is_the_last_answered_exchanges_oldest_first(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, HISTORY_TURNS="2")
    ask_and_answer("q1", "a1")
    ask_and_answer("q2", "a2")
    ask_and_answer("q3", "a3")
    say("q4 never answered")
    say("/repos")  # commands are not part of the conversation history

    request = search_of(say("q5"))

    assert request.history == [
        HistoryItem(role="user", text="q2"),
        HistoryItem(role="assistant", text="a2"),
        HistoryItem(role="user", text="q3"),
        HistoryItem(role="assistant", text="a3"),
    ]


def test_history_is_per_user(database: str) -> None:
    ask_and_answer("alice asks", "alice's answer", user=ALICE)
    request = search_of(say("bob asks", user=BOB))
    assert request.history == []
    assert len({chat.id for chat in sessions_of(ALICE) + sessions_of(BOB)}) == 2


def test_same_message_twice_is_one_turn_and_the_same_event(database: str) -> None:
    add_repo("api")
    say("/repo api")
    ask_and_answer("earlier", "before")
    sid = new_sid()
    envelope = received(sid, "how do sessions expire?")

    first = deliver(envelope)
    second = deliver(envelope)

    assert [e.id for e in first] == [e.id for e in second] == [derived_id(sid, EventType.SEARCH_REQUESTED)]
    assert first[0].payload == second[0].payload
    assert sum(1 for t in turns_of(ALICE) if t.correlation_id == sid) == 1


def test_the_same_message_delivered_concurrently_is_handled_once(database: str) -> None:
    say("/help")  # an existing session, so the duplicates race on the turn itself
    envelope = received("SMdup", "asked once, delivered twice")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait(timeout=30)
            worker.on_message_received(envelope)
        except BaseException as exc:
            errors.append(exc)

    with bus.capture_published() as published:
        threads = [threading.Thread(target=send) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

    assert errors == []
    assert [e.id for e in published] == [derived_id("SMdup", EventType.SEARCH_REQUESTED)] * 2
    assert published[0].payload == published[1].payload
    assert [t.correlation_id for t in turns_of(ALICE)].count("SMdup") == 1


def test_redelivered_question_after_its_answer_publishes_its_reply_again(database: str) -> None:
    # The gateway re-drives a turn whose reply never reached it; the sender sends each chunk once.
    sid = new_sid()
    search_of(deliver(received(sid, "q")))
    (first,) = deliver(ai_response(sid, "a"))
    (again,) = deliver(received(sid, "q"))
    assert again.type is EventType.REPLY_READY and again.id == first.id == derived_id(sid, EventType.REPLY_READY)
    assert again.payload == first.payload


def test_same_command_twice_sends_the_same_reply(database: str) -> None:
    envelope = received(new_sid(), "/help")
    first, second = deliver(envelope), deliver(envelope)
    assert [e.id for e in first] == [e.id for e in second]
    assert reply_of(first) == reply_of(second)
    assert len(turns_of(ALICE)) == 1


def test_idle_session_expires_into_a_fresh_one(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, SESSION_IDLE_MINUTES="30")
    add_repo("api")
    say("/repo api")
    ask_and_answer("old question", "old answer")
    [old] = active_sessions(ALICE)
    make_idle(old.id, minutes=31)

    request = search_of(say("new question"))

    assert request.history == []
    assert request.repos == ["api"]  # the scope is a preference and survives expiry
    expired, fresh = sessions_of(ALICE)
    assert expired.id == old.id
    assert expired.ended_at is not None and expired.end_reason == "expired"
    assert fresh.ended_at is None and fresh.id == request.session_id != old.id


def test_recent_session_is_kept_and_touched(database: str) -> None:
    say("/help")
    [before] = active_sessions(ALICE)
    make_idle(before.id, minutes=5)
    request = search_of(say("still there?"))
    [after] = active_sessions(ALICE)
    assert after.id == before.id == request.session_id
    assert after.last_activity_at >= before.last_activity_at  # touched, not left 5 minutes back


def test_concurrent_messages_of_one_user_share_one_session(database: str) -> None:
    count = 4
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            worker.on_message_received(received(f"SMrace{i}", f"question {i}"))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    # One capture around every thread: capture_published() is process-wide, not per thread.
    with bus.capture_published() as published:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

    assert errors == []
    [chat] = sessions_of(ALICE)
    assert chat.ended_at is None
    assert sorted(e.correlation_id for e in published) == [f"SMrace{i}" for i in range(count)]
    assert {search_of([e]).session_id for e in published} == {chat.id}
    assert {t.session_id for t in turns_of(ALICE)} == {chat.id}


def test_concurrent_messages_after_expiry_start_one_new_session(database: str) -> None:
    say("/help")
    [old] = active_sessions(ALICE)
    make_idle(old.id, minutes=24 * 60)
    count = 3
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            worker.on_message_received(received(f"SMlate{i}", f"late question {i}"))
        except BaseException as exc:
            errors.append(exc)

    with bus.capture_published() as published:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

    assert errors == []
    ended, fresh = sessions_of(ALICE)
    assert (ended.id, ended.end_reason) == (old.id, "expired")
    assert fresh.ended_at is None
    assert {search_of([e]).session_id for e in published} == {fresh.id}
    assert len(published) == count


def test_a_lost_race_for_the_session_retries_with_the_winner(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    say("/help")
    [winner] = active_sessions(ALICE)
    real = lookup.load
    calls = {"n": 0}

    def stale_read(conn: Connection, correlation_id: str, user_id: str, history_turns: int) -> lookup.Lookup:
        # The first look misses the session another transaction just committed.
        calls["n"] += 1
        found = real(conn, correlation_id, user_id, history_turns)
        return replace(found, session=None, exchanges=[]) if calls["n"] == 1 else found

    monkeypatch.setattr(lookup, "load", stale_read)
    request = search_of(say("racing question"))

    assert calls["n"] == 2
    assert request.session_id == winner.id
    assert [chat.id for chat in sessions_of(ALICE)] == [winner.id]


def test_database_refuses_a_second_active_session(database: str) -> None:
    from sqlalchemy.exc import IntegrityError

    from libs.common.db import is_unique_violation, utcnow

    say("/help")
    with pytest.raises(IntegrityError) as caught, get_engine().begin() as conn:
        sessions.start_session(conn, ALICE, utcnow())
    assert is_unique_violation(caught.value)
    with get_engine().begin() as conn:
        ended = sessions.active_session(conn, ALICE)
        assert ended is not None
        sessions.end_session(conn, ended, "reset", utcnow())
        sessions.start_session(conn, ALICE, utcnow())  # allowed once the other one ended
    assert len(active_sessions(ALICE)) == 1


@pytest.mark.parametrize(
    ("body", "num_media", "expected"),
    [
        ("", 1, "text only"),
        ("   ", 2, "text only"),
        ("", 0, "empty"),
    ],
)
def test_empty_and_media_only_messages_get_a_friendly_notice(
    database: str, body: str, num_media: int, expected: str
) -> None:
    events = deliver(received(new_sid(), body, num_media=num_media))
    reply = reply_of(events)
    assert reply.kind == "notice"
    assert expected in reply.body
    assert reply.user_id == ALICE


def test_oversized_message_gets_asked_for_a_shorter_one(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, MAX_MESSAGE_CHARS="50")
    sid = new_sid()
    secret = "x" * 51
    reply = reply_of(deliver(received(sid, secret)))
    assert reply.kind == "notice"
    assert "shorter" in reply.body and "50" in reply.body
    stored = turn(sid)
    assert stored is not None and decrypt(stored.question_enc) == ""  # not kept: it was not processed
    assert search_of(say("y" * 50)).query == "y" * 50  # at the limit is fine


def test_text_with_media_is_answered_as_a_question(database: str) -> None:
    request = search_of(deliver(received(new_sid(), "what is in this screenshot's stack trace?", num_media=1)))
    assert request.query.startswith("what is in")


def test_bodies_are_never_logged(database: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    question = "where-is-the-secret-sauce-7f3a"
    sid = new_sid()
    deliver(received(sid, question))
    deliver(ai_response(sid, "the-answer-body-91cc"))
    say("/search secret-pattern-44de")
    say("/repo nonexistent-repo-name-5e1d")
    say("/export")
    texts = [record.getMessage() for record in caplog.records]
    assert any(sid in text for text in texts)  # ids are logged, so the check below looks at real logs
    for needle in ("secret-sauce", "the-answer-body", "secret-pattern", "nonexistent-repo-name"):
        assert not any(needle in text for text in texts), needle
