"""Greetings, thanks and small talk get a short reply without a search; code questions always search."""

from __future__ import annotations

import pytest

from libs.common.events import EventType, ReplyReady
from services.processor.intent import Intent, classify
from tests.services.processor.support import deliver, new_sid, received


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hi", Intent.GREETING),
        ("Hello there!", Intent.GREETING),
        ("good morning 👋", Intent.GREETING),
        ("hey repotalk", Intent.GREETING),
        ("thanks!", Intent.THANKS),
        ("Thank you so much", Intent.THANKS),
        ("ok thx", Intent.THANKS),
        ("perfect, thanks", Intent.THANKS),
        ("who are you?", Intent.ABOUT_ME),
        ("what can you do", Intent.ABOUT_ME),
        ("tell me a joke", Intent.OFF_TOPIC),
        ("what's the weather in Lisbon tomorrow?", Intent.OFF_TOPIC),
        # Anything that may be about code is a question, pleasantries included.
        ("hi, where is the webhook signature verified?", Intent.QUESTION),
        ("thanks! now how do sessions expire?", Intent.QUESTION),
        ("what does hello_world return", Intent.QUESTION),
        ("who calls process_webhook?", Intent.QUESTION),
        ("what does the Thanks class do", Intent.QUESTION),
        ("how does the rate limit work", Intent.QUESTION),
        ("good", Intent.QUESTION),
        ("retry", Intent.QUESTION),
        ("is there a joke() helper in utils.py", Intent.QUESTION),
    ],
)
def test_classify(text: str, expected: Intent) -> None:
    assert classify(text) is expected


@pytest.mark.parametrize("text", ["hi", "thanks a lot", "who are you?", "tell me a joke"])
def test_small_talk_is_answered_without_a_search(database: str, text: str) -> None:
    events = deliver(received(new_sid(), text))
    assert [e.type for e in events] == [EventType.REPLY_READY]
    reply = events[0].data()
    assert isinstance(reply, ReplyReady) and reply.body


def test_a_greeting_with_a_question_is_searched(database: str) -> None:
    events = deliver(received(new_sid(), "hi! where do we verify the Twilio signature?"))
    assert [e.type for e in events] == [EventType.SEARCH_REQUESTED]
