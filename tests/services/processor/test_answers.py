"""ai.response persists the answer once and replies once; message.failed apologises once."""

from __future__ import annotations

import pytest

from libs.common.events import EventType, derived_id
from libs.common.security import decrypt
from services.processor import texts
from tests.services.processor.support import (
    ALICE,
    active_sessions,
    ai_response,
    deliver,
    failed,
    make_idle,
    new_sid,
    received,
    reply_of,
    say,
    search_of,
    turn,
)


def test_answer_is_persisted_and_replied(database: str) -> None:
    sid = new_sid()
    search_of(deliver(received(sid, "where is the webhook?")))
    [chat] = active_sessions(ALICE)
    make_idle(chat.id, minutes=10)

    events = deliver(ai_response(sid, "In *gateway/webhooks.py:42*", citations=["repotalk/gateway/webhooks.py:42"]))

    reply = reply_of(events)
    assert events[0].id == derived_id(sid, EventType.REPLY_READY)
    assert events[0].correlation_id == sid
    assert (reply.kind, reply.user_id, reply.body) == ("answer", ALICE, "In *gateway/webhooks.py:42*")
    assert reply.erase_user_after is False
    stored = turn(sid)
    assert stored is not None
    assert stored.status == "answered" and stored.answered_at is not None
    assert stored.answerer == "offline"
    assert stored.citations == ["repotalk/gateway/webhooks.py:42"]
    assert stored.answer_enc is not None and "webhooks" not in stored.answer_enc
    assert decrypt(stored.answer_enc) == "In *gateway/webhooks.py:42*"
    [after] = active_sessions(ALICE)
    assert after.id == chat.id and after.last_activity_at > chat.last_activity_at


def test_redelivered_answer_is_stored_once_and_replied_with_the_same_event(database: str) -> None:
    sid = new_sid()
    search_of(deliver(received(sid, "q")))
    envelope = ai_response(sid, "first answer", answerer="openai")

    first = deliver(envelope)
    second = deliver(envelope)
    # Even a different second response (a retried provider call) does not replace the first answer.
    third = deliver(ai_response(sid, "second answer", answerer="anthropic"))

    assert [e.id for e in first] == [e.id for e in second] == [e.id for e in third]
    assert reply_of(first) == reply_of(second) == reply_of(third)
    stored = turn(sid)
    assert stored is not None and stored.answer_enc is not None
    assert decrypt(stored.answer_enc) == "first answer" and stored.answerer == "openai"


def test_empty_answer_becomes_a_friendly_one(database: str) -> None:
    sid = new_sid()
    deliver(received(sid, "q"))
    assert reply_of(deliver(ai_response(sid, "   "))).body == texts.EMPTY_ANSWER


def test_answer_without_a_turn_is_dropped(database: str) -> None:
    assert deliver(ai_response("SMunknown", "answer")) == []


def test_failure_fails_the_turn_and_apologises_once(database: str) -> None:
    sid = new_sid()
    deliver(received(sid, "q"))

    first = deliver(failed(sid, "ai_engine"))
    again = deliver(failed(sid, "ai_engine"))  # redelivered
    other = deliver(failed(sid, "code_search"))  # a second failing stage

    reply = reply_of(first)
    assert (reply.kind, reply.user_id, reply.body) == ("error", ALICE, texts.APOLOGY)
    ids = {e.id for e in first + again + other}
    assert ids == {derived_id(sid, EventType.REPLY_READY)}  # one reply, whatever repeats
    stored = turn(sid)
    assert stored is not None and stored.status == "failed"
    # A late answer must not follow the apology under the same reply id.
    assert deliver(ai_response(sid, "late answer")) == []
    assert turn(sid).answer_enc is None  # type: ignore[union-attr]


def test_a_redriven_failed_turn_publishes_its_apology_again(database: str) -> None:
    # The gateway re-drives a turn whose reply never reached it (lost between the broker and the sender): for a
    # failed turn, that reply is the apology, the same event the failure published.
    sid = new_sid()
    search_of(deliver(received(sid, "q")))
    (apology,) = deliver(failed(sid, "code_search"))
    (again,) = deliver(received(sid, "q"))
    assert again.type is EventType.REPLY_READY and again.id == apology.id == derived_id(sid, EventType.REPLY_READY)
    assert again.payload == apology.payload and reply_of([again]).body == texts.APOLOGY
    assert turn(sid).status == "failed"  # type: ignore[union-attr]


def test_failed_turns_are_not_history(database: str) -> None:
    sid = new_sid()
    deliver(received(sid, "q"))
    deliver(failed(sid, "ai_engine"))
    assert search_of(say("next")).history == []


@pytest.mark.parametrize("stage", ["gateway", "analytics"])
def test_failures_that_cannot_or_need_not_be_apologised_for(database: str, stage: str) -> None:
    sid = new_sid()
    deliver(received(sid, "q"))
    assert deliver(failed(sid, stage)) == []
    stored = turn(sid)
    assert stored is not None and stored.status == "searching"


def test_failure_after_the_answer_changes_nothing(database: str) -> None:
    sid = new_sid()
    deliver(received(sid, "q"))
    deliver(ai_response(sid, "a"))
    assert deliver(failed(sid, "ai_engine")) == []
    assert turn(sid).status == "answered"  # type: ignore[union-attr]


def test_failure_of_an_answered_command_changes_nothing(database: str) -> None:
    sid = new_sid()
    deliver(received(sid, "/help"))
    assert deliver(failed(sid, "processor")) == []


def test_failure_before_the_turn_existed_still_apologises_once(database: str) -> None:
    sid = new_sid()
    first = deliver(failed(sid, "processor"))
    again = deliver(failed(sid, "processor"))

    assert reply_of(first).body == texts.APOLOGY
    assert [e.id for e in first] == [e.id for e in again]
    # A late redelivery of the message does not start the turn after the apology: it publishes the apology again
    # (the same event, which the gateway sends once), in case that was what got lost.
    late = deliver(received(sid, "q"))
    assert [(e.type, e.id, e.payload) for e in late] == [(e.type, e.id, e.payload) for e in first]


def test_failure_without_a_user_is_dropped(database: str) -> None:
    assert deliver(failed("SMnobody", "processor", user=None)) == []
