"""POST /webhooks/twilio: verify, dedupe, rate limit, store durably with its event, answer TwiML."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from libs.common import bus, db
from libs.common.events import Envelope, EventType, MessageReceived, ReplyReady, derived_id
from libs.common.models.messaging import InboundMessage, OutboxEvent, User
from libs.common.security import decrypt, user_id_for
from services.gateway.inbound import RATE_LIMIT_NOTICE, Disposition, InboundMessageIn, record_inbound
from services.gateway.outbox import relay_once
from services.gateway.webhooks import EMPTY_TWIML
from tests.conftest import apply_env
from tests.services.gateway.conftest import (
    ADDRESS,
    AUTH_TOKEN,
    WEBHOOK_URL,
    count,
    gateway_row_counts,
    inbound_params,
    post_signed,
    sign,
)

SID = "SM" + "1" * 32


def _relay_all() -> list[Envelope]:
    with bus.capture_published() as sent:
        while relay_once():
            pass
    return sent


def test_valid_webhook_is_stored_with_one_event_and_answered_with_empty_twiml(client: TestClient) -> None:
    response = post_signed(client, inbound_params(SID, body="how do sessions expire?"))

    assert response.status_code == 200
    assert response.text == EMPTY_TWIML
    assert response.headers["content-type"].startswith("text/xml")
    user_id = user_id_for(ADDRESS)
    with db.session_scope() as session:
        inbound = session.get(InboundMessage, SID)
        user = session.get(User, user_id)
        outbox = session.execute(select(OutboxEvent)).scalars().all()
    assert inbound is not None and inbound.disposition == "accepted" and inbound.user_id == user_id
    assert decrypt(inbound.body_enc) == "how do sessions expire?"
    assert "sessions" not in inbound.body_enc  # encrypted at rest
    assert user is not None and decrypt(user.address_enc) == ADDRESS
    assert user.last_inbound_at is not None
    assert [row.event_type for row in outbox] == [EventType.MESSAGE_RECEIVED.value]
    assert outbox[0].published_at is None
    assert "sessions" not in outbox[0].envelope

    sent = _relay_all()
    assert [e.type for e in sent] == [EventType.MESSAGE_RECEIVED]
    envelope = sent[0]
    assert envelope.id == derived_id(SID, EventType.MESSAGE_RECEIVED)
    assert envelope.correlation_id == SID
    payload = envelope.data()
    assert isinstance(payload, MessageReceived)
    assert (payload.message_sid, payload.user_id, payload.body) == (SID, user_id, "how do sessions expire?")
    assert ADDRESS not in json.dumps(envelope.to_json())  # the number never travels in events
    assert _relay_all() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        {"X-Twilio-Signature": sign(WEBHOOK_URL, inbound_params(SID), token="another-token")},
        {"X-Twilio-Signature": sign("https://elsewhere.example/webhooks/twilio", inbound_params(SID))},
    ],
)
def test_bad_or_missing_signature_is_refused_and_nothing_stored(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/webhooks/twilio",
        content=urlencode(inbound_params(SID)),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["detail"]
    assert gateway_row_counts() == {"users": 0, "inbound_messages": 0, "outbox": 0, "outbound_messages": 0}


def test_tampered_field_breaks_the_signature(client: TestClient) -> None:
    params = inbound_params(SID)
    signature = sign(WEBHOOK_URL, params)
    tampered = [(k, "transfer all the money" if k == "Body" else v) for k, v in params]
    response = client.post(
        "/webhooks/twilio", content=urlencode(tampered),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
    )
    assert response.status_code == 403
    assert gateway_row_counts()["inbound_messages"] == 0


@pytest.mark.parametrize("missing", ["MessageSid", "From"])
def test_required_fields(client: TestClient, missing: str) -> None:
    params = [(k, v) for k, v in inbound_params(SID) if k != missing]
    response = post_signed(client, params)
    assert response.status_code == 400
    assert missing in response.json()["detail"]
    assert gateway_row_counts()["inbound_messages"] == 0


def test_duplicate_message_sid_produces_one_event(client: TestClient) -> None:
    first = post_signed(client, inbound_params(SID))
    again = post_signed(client, inbound_params(SID, body="a retry may even differ"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.text == EMPTY_TWIML
    assert count(InboundMessage) == 1 and count(OutboxEvent) == 1
    assert [e.correlation_id for e in _relay_all()] == [SID]


def test_concurrent_identical_messages_are_stored_once(gateway_db: str) -> None:
    message = InboundMessageIn(message_sid=SID, address=ADDRESS, body="same", num_media=0)
    start = threading.Barrier(6)
    outcomes: list[Disposition] = []
    errors: list[BaseException] = []

    def post() -> None:
        try:
            start.wait()
            outcomes.append(record_inbound(message).disposition)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(outcomes) == sorted([Disposition.ACCEPTED] + [Disposition.DUPLICATE] * 5)
    assert count(InboundMessage) == 1 and count(OutboxEvent) == 1 and count(User) == 1


def test_rate_limit_notice_once_per_window_and_no_events_beyond_the_limit(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, RATE_LIMIT_PER_MINUTE="3")
    for i in range(7):
        assert post_signed(client, inbound_params(f"SM{i:032d}")).status_code == 200

    sent = _relay_all()
    received = [e for e in sent if e.type is EventType.MESSAGE_RECEIVED]
    notices = [e for e in sent if e.type is EventType.REPLY_READY]
    assert [e.correlation_id for e in received] == [f"SM{i:032d}" for i in range(3)]
    assert len(notices) == 1
    notice = notices[0].data()
    assert isinstance(notice, ReplyReady)
    assert notice.kind == "notice" and notice.body == RATE_LIMIT_NOTICE
    assert notice.user_id == user_id_for(ADDRESS)
    with db.session_scope() as session:
        dispositions = dict(session.execute(select(InboundMessage.message_sid, InboundMessage.disposition)).all())
    assert sorted(dispositions.values()) == ["accepted"] * 3 + ["rate_limited"] * 4


def test_rate_limit_window_rolls(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, RATE_LIMIT_PER_MINUTE="2")
    t0 = db.utcnow()

    def send(i: int, at_seconds: float) -> Disposition:
        message = InboundMessageIn(message_sid=f"SM{i:032d}", address=ADDRESS, body=f"q{i}")
        return record_inbound(message, now=t0 + timedelta(seconds=at_seconds)).disposition

    assert [send(0, 0), send(1, 1), send(2, 2), send(3, 30)] == [
        Disposition.ACCEPTED, Disposition.ACCEPTED, Disposition.RATE_LIMITED, Disposition.RATE_LIMITED,
    ]
    # The rolling minute has moved past the first two accepted messages (at 0 s and 1 s).
    assert [send(4, 61), send(5, 62), send(6, 63)] == [
        Disposition.ACCEPTED, Disposition.ACCEPTED, Disposition.RATE_LIMITED,
    ]
    sent = _relay_all()
    # One notice per window: at 2 s (not again at 30 s), and again at 63 s.
    assert [e.correlation_id for e in sent if e.type is EventType.REPLY_READY] == [f"SM{2:032d}", f"SM{6:032d}"]
    assert [e.correlation_id for e in sent if e.type is EventType.MESSAGE_RECEIVED] == [
        f"SM{i:032d}" for i in (0, 1, 4, 5)
    ]


def test_rate_limit_is_per_user(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, RATE_LIMIT_PER_MINUTE="1")
    a = record_inbound(InboundMessageIn(message_sid="SMa", address=ADDRESS, body="x"))
    b = record_inbound(InboundMessageIn(message_sid="SMb", address="whatsapp:+15550002222", body="y"))
    assert (a.disposition, b.disposition) == (Disposition.ACCEPTED, Disposition.ACCEPTED)
    assert a.user_id != b.user_id


def test_webhook_does_no_broker_io_and_survives_a_dead_broker(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, BROKER_URL="redis://127.0.0.1:1/0", BROKER_PUBLISH_TIMEOUT="0.2")

    def no_publish(*_: object, **__: object) -> None:
        raise AssertionError("the webhook must not publish in the request path")

    with monkeypatch.context() as patch:
        patch.setattr(bus, "publish", no_publish)
        response = post_signed(client, inbound_params(SID))
    assert response.status_code == 200 and response.text == EMPTY_TWIML

    # The dead broker: relaying fails, the row stays pending with the error and a backoff.
    assert relay_once() == 0
    with db.session_scope() as session:
        row = session.execute(select(OutboxEvent)).scalar_one()
    assert row.published_at is None and row.attempts == 1
    assert row.last_error and row.next_attempt_at is not None and row.next_attempt_at > db.utcnow()
    assert relay_once() == 0  # still backing off: not even tried
    with db.session_scope() as session:
        assert session.execute(select(OutboxEvent.attempts)).scalar_one() == 1

    # The broker is back: published exactly once.
    apply_env(monkeypatch, BROKER_URL="memory://")
    later = db.utcnow() + timedelta(minutes=5)
    with bus.capture_published() as sent:
        assert relay_once(now=later) == 1
        assert relay_once(now=later) == 0
    assert [e.id for e in sent] == [derived_id(SID, EventType.MESSAGE_RECEIVED)]


def test_oversized_body_is_refused(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, MAX_REQUEST_BYTES="2048")
    params = inbound_params(SID, body="x" * 4096)
    response = post_signed(client, params)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        body = urlencode(params).encode()
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    streamed = client.post(
        "/webhooks/twilio", content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sign(WEBHOOK_URL, params)},
    )
    assert streamed.status_code == 413
    assert gateway_row_counts()["inbound_messages"] == 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"MessageSid=SM1&From=whatsapp%3A%2B1555&Body=\xff\xfe", "application/x-www-form-urlencoded", 400, "UTF-8"),
        (b"MessageSid=SM1&From=whatsapp%3A%2B1555&Body=%FF%FE", "application/x-www-form-urlencoded", 400, "UTF-8"),
        (b"MessageSid=SM1&garbage&Body=hi", "application/x-www-form-urlencoded", 400, "malformed"),
        (b"=value", "application/x-www-form-urlencoded", 400, "malformed"),
        (b"<xml/>", "application/xml", 415, "content type"),
        (b"{not json", "application/json", 400, "JSON"),
    ],
)
def test_undecodable_bodies_are_refused_with_a_reason(
    client: TestClient, body: bytes, content_type: str, status: int, reason: str
) -> None:
    response = client.post(
        "/webhooks/twilio", content=body, headers={"Content-Type": content_type, "X-Twilio-Signature": "x"}
    )
    assert response.status_code == status
    assert reason in response.json()["detail"]
    assert gateway_row_counts()["inbound_messages"] == 0


def test_unicode_body_roundtrips(client: TestClient) -> None:
    text = "¿dónde está la firma? 🔐 — 署名"
    assert post_signed(client, inbound_params(SID, body=text)).status_code == 200
    [event] = _relay_all()
    payload = event.data()
    assert isinstance(payload, MessageReceived) and payload.body == text


def test_signed_token_must_be_the_configured_one(client: TestClient) -> None:
    assert post_signed(client, inbound_params(SID), token=AUTH_TOKEN + "x").status_code == 403
    assert post_signed(client, inbound_params(SID), token=AUTH_TOKEN).status_code == 200
