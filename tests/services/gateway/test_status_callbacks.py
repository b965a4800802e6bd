"""POST /webhooks/twilio/status: signed, forward-only, announced once per change."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from libs.common import bus, db
from libs.common.events import EventType, MessageStatus
from libs.common.models.messaging import OutboundMessage, OutboxEvent
from libs.common.security import encrypt
from services.gateway.outbox import relay_once
from services.gateway.webhooks import EMPTY_TWIML
from tests.services.gateway.conftest import count, post_signed

PATH = "/webhooks/twilio/status"


def _chunk(provider_sid: str, status: str = "queued", index: int = 0) -> None:
    with db.session_scope() as session:
        session.add(OutboundMessage(
            reply_id="r" * 32, correlation_id="SM_inbound", chunk_index=index, chunk_count=3, user_id="u_1",
            body_enc=encrypt("hello"), channel="twilio", status=status, provider_sid=provider_sid,
        ))


def _status_of(provider_sid: str) -> tuple[str, str | None]:
    with db.session_scope() as session:
        row = session.execute(
            select(OutboundMessage.status, OutboundMessage.error_code)
            .where(OutboundMessage.provider_sid == provider_sid)
        ).one()
    return row[0], row[1]


def _callback(client: TestClient, sid: str, status: str, error_code: str | None = None) -> None:
    params = [("MessageSid", sid), ("MessageStatus", status), ("AccountSid", "AC" + "1" * 32),
              ("To", "whatsapp:+15550001111"), ("From", "whatsapp:+14155238886"), ("ApiVersion", "2010-04-01")]
    if error_code:
        params.append(("ErrorCode", error_code))
    response = post_signed(client, params, path=PATH)
    assert response.status_code == 200, response.text
    assert response.text == EMPTY_TWIML


def test_status_moves_forward_only(client: TestClient) -> None:
    _chunk("SMa")
    steps = [("sent", "sent"), ("delivered", "delivered"), ("sent", "delivered"), ("queued", "delivered"),
             ("read", "read"), ("delivered", "read"), ("failed", "read")]
    for status, expected in steps:
        _callback(client, "SMa", status)
        assert _status_of("SMa")[0] == expected, status

    with bus.capture_published() as sent:
        relay_once()
    statuses = [e.data() for e in sent]
    assert all(e.type is EventType.MESSAGE_STATUS and e.correlation_id == "SM_inbound" for e in sent)
    assert [s.status for s in statuses if isinstance(s, MessageStatus)] == ["sent", "delivered", "read"]


def test_steps_may_be_skipped(client: TestClient) -> None:
    _chunk("SMb")
    _callback(client, "SMb", "read")  # read without delivered (or sent)
    assert _status_of("SMb")[0] == "read"


def test_failures_are_terminal_and_keep_the_error_code(client: TestClient) -> None:
    _chunk("SMc", status="sent")
    _callback(client, "SMc", "undelivered", error_code="63016")
    assert _status_of("SMc") == ("undelivered", "63016")
    _callback(client, "SMc", "delivered")
    _callback(client, "SMc", "failed")
    assert _status_of("SMc") == ("undelivered", "63016")
    assert count(OutboxEvent) == 1


def test_twilio_sending_status_never_looks_like_our_claim(client: TestClient) -> None:
    _chunk("SMd")
    _callback(client, "SMd", "sending")
    assert _status_of("SMd")[0] == "queued"


@pytest.mark.parametrize("status", ["delivered", "no-such-status"])
def test_unknown_sid_or_status_changes_nothing(client: TestClient, status: str) -> None:
    _chunk("SMe")
    _callback(client, "SMunknown" if status == "delivered" else "SMe", status)
    assert _status_of("SMe")[0] == "queued"
    assert count(OutboxEvent) == 0


def test_status_callback_must_be_signed(client: TestClient) -> None:
    _chunk("SMf")
    response = client.post(
        PATH, content="MessageSid=SMf&MessageStatus=delivered",
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "forged"},
    )
    assert response.status_code == 403
    assert _status_of("SMf")[0] == "queued"
    assert count(OutboxEvent) == 0


def test_status_callback_requires_its_fields(client: TestClient) -> None:
    response = post_signed(client, [("MessageSid", "SMg")], path=PATH)
    assert response.status_code == 400
    assert "MessageStatus" in response.json()["detail"]
