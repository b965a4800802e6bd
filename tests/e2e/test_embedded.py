"""Embedded mode end to end: a signed webhook in, a cited reply out at the fake Twilio server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from libs.common import db
from libs.common.models import InboundMessage, OutboxEvent, Turn
from repotalk.client import new_message_sid
from tests.conftest import apply_env
from tests.e2e.support import embedded_server, post_webhook, wait_until
from tests.fakes.twilio_server import FakeTwilio

QUESTION = "where is the webhook signature verified?"
SENDER = "whatsapp:+15557654321"


@pytest.fixture
def twilio(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        apply_env(monkeypatch, TWILIO_ACCOUNT_SID=fake.account_sid, TWILIO_AUTH_TOKEN=fake.auth_token,
                  TWILIO_API_BASE_URL=fake.base_url, TWILIO_SEND_BACKOFF_BASE="0.01")
        yield fake


@pytest.fixture
def server(twilio: FakeTwilio) -> Iterator[str]:
    with embedded_server() as base_url:
        yield base_url


def _replies_to(fake: FakeTwilio, address: str) -> list[str]:
    return [m.body for m in fake.messages if m.to == address]


def _count(model: type[db.Base]) -> int:
    with db.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_question_is_answered_with_a_citation_through_twilio(twilio: FakeTwilio, server: str) -> None:
    response = post_webhook(server, QUESTION, SENDER, new_message_sid(), twilio.auth_token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response></Response>" in response.text
    replies = wait_until(lambda: _replies_to(twilio, SENDER), what="the reply at fake Twilio")
    answer = "\n".join(replies)
    assert "webhooks/security.py:" in answer
    assert "verify_twilio_signature" in answer
    assert all(m.from_ == "whatsapp:+14155238886" for m in twilio.messages)


def test_the_same_message_sid_twice_gets_one_reply(twilio: FakeTwilio, server: str) -> None:
    sid = new_message_sid()
    for _ in range(2):
        assert post_webhook(server, QUESTION, SENDER, sid, twilio.auth_token).status_code == 200
    first = wait_until(lambda: _replies_to(twilio, SENDER), what="the first reply")
    # A later message from the same user is answered after the duplicate would have been: its reply
    # arriving means the pipeline has drained past the duplicate.
    post_webhook(server, "/help", SENDER, new_message_sid(), twilio.auth_token)
    wait_until(lambda: len(_replies_to(twilio, SENDER)) > len(first), what="the /help reply")
    answers = [body for body in _replies_to(twilio, SENDER) if "security.py" in body]
    assert len(answers) == 1
    assert _count(Turn) == 2


def test_a_bad_signature_is_refused_and_nothing_is_stored(twilio: FakeTwilio, server: str) -> None:
    response = post_webhook(server, QUESTION, SENDER, new_message_sid(), twilio.auth_token,
                            signature="bm90LWEtc2lnbmF0dXJl")
    assert response.status_code == 403
    assert "signature" in response.text.lower()
    assert _count(InboundMessage) == 0
    assert _count(OutboxEvent) == 0
    assert twilio.messages == []


def test_repotalk_ask_prints_a_cited_answer_from_the_sandbox(base_env: dict[str, str]) -> None:
    """The README's promise: `repotalk ask` against the embedded server, no Twilio account at all."""
    with embedded_server() as base_url:
        env = {**os.environ, **base_env}
        result = subprocess.run(
            [sys.executable, "-m", "repotalk", "ask", QUESTION, "--server", base_url, "--timeout", "60"],
            env=env, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "webhooks/security.py:" in result.stdout


def test_a_whole_turn_logs_no_phone_number_and_no_message_body(
    twilio: FakeTwilio, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret_question = "where is the webhook signature verified for zanzibar-owl-7731?"
    with caplog.at_level(logging.DEBUG):
        post_webhook(server, secret_question, SENDER, new_message_sid(), twilio.auth_token)
        wait_until(lambda: _replies_to(twilio, SENDER), what="the reply")
    assert caplog.records, "the turn should have logged something at DEBUG"
    digits = SENDER.split("+", 1)[1]
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert digits not in text, f"phone number in a log line: {record.name}"
        assert "zanzibar-owl" not in text, f"message body in a log line: {record.name}"


def test_repotalk_chat_holds_a_conversation_in_the_terminal(base_env: dict[str, str]) -> None:
    with embedded_server() as base_url:
        env = {**os.environ, **base_env}
        result = subprocess.run(
            [sys.executable, "-m", "repotalk", "chat", "--server", base_url],
            input="/help\n/repos\n", env=env, capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("repotalk> ") == 2  # one reply per message
    assert "/search" in result.stdout  # the help text lists the commands
    assert "sample_repo" in result.stdout  # /repos lists the indexed repository


def test_with_the_allow_list_a_listed_number_is_answered_and_a_stranger_refused(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = "whatsapp:+15550009999"
    apply_env(monkeypatch, ALLOWED_NUMBERS=SENDER.removeprefix("whatsapp:"))
    with embedded_server() as server:
        refused = post_webhook(server, QUESTION, stranger, new_message_sid(), twilio.auth_token)
        assert refused.status_code == 200 and "private code assistant" in refused.text
        assert post_webhook(server, QUESTION, SENDER, new_message_sid(), twilio.auth_token).status_code == 200
        answer = "\n".join(wait_until(lambda: _replies_to(twilio, SENDER), what="the listed number's reply"))
        assert "webhooks/security.py:" in answer
    # The refusal went back in the webhook's own answer: nothing was sent to, or kept about, the stranger.
    assert _replies_to(twilio, stranger) == []
    assert _count(InboundMessage) == 1 and _count(Turn) == 1


def _replies_after_losing_the_first(twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ask the question with the first reply.ready lost on its way to the sender; the replies sent, once the
    re-drive has brought it and a /help after it has drained what was in flight."""
    from libs.common.events import Envelope, EventType
    from services.gateway import worker as gateway_worker

    apply_env(monkeypatch, TURN_REDRIVE_AFTER="1", OUTBOX_RELAY_INTERVAL="0.2")
    send = gateway_worker.HANDLERS[EventType.REPLY_READY]
    lost: list[str] = []

    def lose_the_first(envelope: Envelope) -> None:
        if not lost:
            lost.append(envelope.id)
            return
        send(envelope)

    monkeypatch.setitem(gateway_worker.HANDLERS, EventType.REPLY_READY, lose_the_first)
    with embedded_server() as server:
        assert post_webhook(server, QUESTION, SENDER, new_message_sid(), twilio.auth_token).status_code == 200
        wait_until(lambda: _replies_to(twilio, SENDER), 30, "the reply, after the re-drive")
        post_webhook(server, "/help", SENDER, new_message_sid(), twilio.auth_token)
        wait_until(lambda: len(_replies_to(twilio, SENDER)) >= 2, 30, "the /help reply")
    assert lost
    return _replies_to(twilio, SENDER)


def test_a_reply_lost_on_its_way_to_the_sender_is_sent_after_the_redrive(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply.ready can vanish between the broker and the gateway (a worker killed just as it took the task off
    the queue, before the broker counted it as taken). The gateway re-drives the turn, which has no reply, and the
    processor, finding it answered, publishes the same reply again: it is sent once."""
    replies = _replies_after_losing_the_first(twilio, monkeypatch)
    assert len([body for body in replies if "security.py" in body]) == 1


def test_an_apology_lost_on_its_way_to_the_sender_is_sent_after_the_redrive(
    twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a turn that failed: its reply is the apology, which can vanish the same way. The re-driven
    turn, found failed, publishes the apology again: the user gets it, once."""
    from libs.common.bus import PermanentError
    from libs.common.events import Envelope, EventType
    from services.code_search import worker as code_search_worker
    from services.processor import texts

    def broken_search(envelope: Envelope) -> None:
        raise PermanentError("index unreadable")

    monkeypatch.setitem(code_search_worker.HANDLERS, EventType.SEARCH_REQUESTED, broken_search)
    assert _replies_after_losing_the_first(twilio, monkeypatch).count(texts.APOLOGY) == 1
