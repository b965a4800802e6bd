"""Whatever a user types, the processor answers: command parsing, intent classification and the whole
message.received handler never raise on generated text (odd unicode, control characters, slashes,
lone "YES DELETE"s, very long messages). Run with ``--hypothesis-show-statistics`` for the case counts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.common.events import EventType
from services.processor import commands, intent
from tests.services.processor.support import deliver, new_sid, received

# Messages as phones send them: any text, commands with arguments, confirmations, emoji, very long ones.
messages = st.one_of(
    st.text(max_size=300),
    st.builds(lambda name, arg: f"/{name} {arg}", st.sampled_from(
        ["help", "reset", "repos", "repo", "search", "export", "delete", "HELP", "", "/", "unknown", "repo all"]
    ), st.text(max_size=80)),
    st.sampled_from(["YES DELETE", "yes  delete.", "/delete", "\u0000", "\ufeff/help", "/search (a+)+$",
                     "/search [", "/repo ../../etc", "🙂" * 50, " " * 10]),
    st.text(max_size=1).map(lambda c: c * 5000),
)


@given(text=messages)
@settings(max_examples=500, deadline=None)
def test_command_parsing_and_intent_never_raise(text: str) -> None:
    command = commands.parse(text)
    assert command.name == command.name.lower()
    assert isinstance(intent.classify(text), intent.Intent)


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@given(text=messages)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_message_gets_a_reply_or_a_search(database: str, text: str) -> None:
    events = deliver(received(new_sid(), text))
    assert events, "every accepted message is answered"
    assert {e.type for e in events} <= {EventType.REPLY_READY, EventType.SEARCH_REQUESTED}
    for event in events:
        event.data()  # every published payload validates
