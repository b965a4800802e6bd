"""/export and /delete: the user's data, readable, and erased on confirmation only."""

from __future__ import annotations

from datetime import timedelta

from libs.common.db import get_engine, session_scope
from libs.common.events import EventType, derived_id
from libs.common.models.conversations import ChatSession, Erasure
from services.processor import privacy, texts
from tests.services.processor.support import (
    ALICE,
    BOB,
    active_sessions,
    add_repo,
    ask_and_answer,
    deliver,
    failed,
    make_idle,
    new_sid,
    received,
    reply_of,
    say,
    search_of,
    sessions_of,
    turns_of,
)


def test_export_holds_the_users_questions_answers_and_sessions(database: str) -> None:
    add_repo("api")
    ask_and_answer("alice first question", "alice first answer")
    [first] = active_sessions(ALICE)
    make_idle(first.id, minutes=60)
    say("/repo api")
    ask_and_answer("alice second question", "alice second answer")
    unanswered = new_sid()
    deliver(received(unanswered, "alice lost question"))
    deliver(failed(unanswered, "ai_engine"))
    ask_and_answer("bob secret question", "bob secret answer", user=BOB)

    sid = new_sid()
    events = deliver(received(sid, "/export"))
    reply = reply_of(events)

    assert events[0].id == derived_id(sid, EventType.REPLY_READY)
    body = reply.body
    for text in (
        "alice first question", "alice first answer", "alice second question", "alice second answer",
        "alice lost question", "/repo api",
    ):
        assert text in body
    assert "bob" not in body
    assert "*Conversation 1*" in body and "*Conversation 2*" in body
    assert "(expired)" in body and "active" in body
    assert "_Scope: all repositories_" in body and "_Scope: api_" in body
    assert "failed" in body
    assert first.created_at.strftime("%Y-%m-%d %H:%M UTC") in body
    assert body.index("alice first question") < body.index("alice second question")


def test_export_of_a_new_user_shows_just_the_current_conversation(database: str) -> None:
    body = reply_of(say("/export")).body
    assert "1 conversation," in body and "_(no messages)_" in body


def test_export_of_an_unknown_user_holds_nothing(database: str) -> None:
    with get_engine().begin() as conn:
        assert "hold nothing" in privacy.export(conn, BOB)


def test_delete_asks_for_confirmation_and_yes_delete_erases(database: str) -> None:
    ask_and_answer("alice question", "alice answer")
    ask_and_answer("bob question", "bob answer", user=BOB)

    prompt = reply_of(say("/delete"))
    assert texts.CONFIRM_DELETE_PHRASE in prompt.body and "5 minutes" in prompt.body
    assert prompt.erase_user_after is False
    assert len(turns_of(ALICE)) == 2  # nothing erased yet

    sid = new_sid()
    confirm = received(sid, "yes delete")
    events = deliver(confirm)

    reply = reply_of(events)
    assert events[0].id == derived_id(sid, EventType.REPLY_READY)
    assert reply.erase_user_after is True and reply.user_id == ALICE
    assert "erased 1 conversation and 2 messages" in reply.body
    assert sessions_of(ALICE) == [] and turns_of(ALICE) == []
    assert len(turns_of(BOB)) == 1 and len(sessions_of(BOB)) == 1

    # A redelivered confirmation re-sends the same reply and does not bring the user back.
    again = deliver(confirm)
    assert [e.id for e in again] == [e.id for e in events]
    assert reply_of(again) == reply
    assert sessions_of(ALICE) == [] and turns_of(ALICE) == []
    with session_scope() as db:
        receipt = db.get(Erasure, sid)
        assert receipt is not None and (receipt.sessions, receipt.turns) == (1, 2)


def test_any_other_message_cancels_the_deletion(database: str) -> None:
    ask_and_answer("alice question", "alice answer")
    say("/delete")

    request = search_of(say("actually, where is the retry policy?"))
    assert request.query == "actually, where is the retry policy?"
    [chat] = active_sessions(ALICE)
    assert chat.pending_action is None

    reply = reply_of(say("YES DELETE"))
    assert reply.erase_user_after is False and reply.body == texts.NOTHING_TO_CONFIRM
    assert len(turns_of(ALICE)) == 4


def test_a_command_also_cancels_the_deletion(database: str) -> None:
    say("/delete")
    say("/help")
    assert reply_of(say("YES DELETE")).erase_user_after is False
    assert len(sessions_of(ALICE)) == 1


def test_expired_confirmation_erases_nothing(database: str) -> None:
    ask_and_answer("alice question", "alice answer")
    say("/delete")
    [chat] = active_sessions(ALICE)
    with session_scope() as db:
        row = db.get(ChatSession, chat.id)
        assert row is not None and row.pending_until is not None
        row.pending_until = row.pending_until - timedelta(minutes=6)

    reply = reply_of(say("YES DELETE"))

    assert reply.erase_user_after is False and reply.body == texts.NOTHING_TO_CONFIRM
    assert len(turns_of(ALICE)) == 3
    [after] = active_sessions(ALICE)
    assert after.pending_action is None


def test_confirmation_survives_session_expiry_within_its_window(database: str) -> None:
    say("/delete")
    [chat] = active_sessions(ALICE)
    make_idle(chat.id, minutes=120)  # the session went idle, the 5-minute window has not passed

    assert reply_of(say("YES DELETE")).erase_user_after is True
    assert sessions_of(ALICE) == []


def test_answer_arriving_after_erasure_is_dropped(database: str) -> None:
    from tests.services.processor.support import ai_response

    sid = new_sid()
    deliver(received(sid, "question in flight"))
    say("/delete")
    say("YES DELETE")
    assert deliver(ai_response(sid, "answer")) == []
    assert turns_of(ALICE) == []
