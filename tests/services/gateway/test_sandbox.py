"""The sandbox channel: replies stored instead of sent, read back through the sandbox API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from libs.common import bus, db
from libs.common.events import Envelope, EventType, MessageReceived, MessageSent, ReplyReady, derived_id
from services.gateway.outbox import relay_once
from services.gateway.sender import deliver_reply
from services.gateway.splitting import split_message
from services.gateway.sql import OUTBOUND
from tests.conftest import apply_env
from tests.services.gateway.conftest import AUTH_TOKEN, inbound_params, post_signed

SID = "SM" + "5" * 32
AUTH = {"Authorization": f"Bearer {AUTH_TOKEN}"}


def _inbound(client: TestClient) -> str:
    """A real inbound webhook; returns the user id its message.received carries."""
    assert post_signed(client, inbound_params(SID)).status_code == 200
    with bus.capture_published() as sent:
        relay_once()
    received = sent[0].data()
    assert isinstance(received, MessageReceived)
    return received.user_id


def _reply(user_id: str, body: str, key: str = "") -> Envelope:
    """The reply the processor would publish for the inbound message."""
    return Envelope.new(
        ReplyReady(user_id=user_id, body=body),
        correlation_id=SID, source="processor", event_id=derived_id(SID, EventType.REPLY_READY, key),
    )


def test_sandbox_stores_replies_and_serves_them(client: TestClient) -> None:
    empty = client.get(f"/api/v1/sandbox/replies/{SID}", headers=AUTH)
    assert empty.status_code == 200
    assert empty.json() == {"message_sid": SID, "replies": [], "complete": False}

    body = "\n\n".join(f"Part {i}. " + "the outbox relays events " * 20 for i in range(6))
    with bus.capture_published() as sent:
        report = deliver_reply(_reply(_inbound(client), body))
    assert report.sent == len(split_message(body)) > 1
    payloads = [e.data() for e in sent]
    assert all(isinstance(p, MessageSent) and p.channel == "sandbox" and p.provider_sid.startswith("SB")
               for p in payloads)

    data = client.get(f"/api/v1/sandbox/replies/{SID}", headers=AUTH).json()
    assert data["message_sid"] == SID and data["complete"] is True
    assert [r["body"] for r in data["replies"]] == split_message(body)
    assert [r["chunk_index"] for r in data["replies"]] == list(range(len(data["replies"])))
    assert {r["chunk_count"] for r in data["replies"]} == {len(data["replies"])}
    assert {r["status"] for r in data["replies"]} == {"delivered"}
    assert all(r["created_at"] for r in data["replies"])


def test_every_reply_of_a_message_is_listed(client: TestClient) -> None:
    with bus.capture_published():
        user_id = _inbound(client)
        deliver_reply(_reply(user_id, "First, a notice.", key="notice"))
        deliver_reply(_reply(user_id, "Then the answer.", key="answer"))
    data = client.get(f"/api/v1/sandbox/replies/{SID}", headers=AUTH).json()
    assert [r["body"] for r in data["replies"]] == ["First, a notice.", "Then the answer."]
    assert data["complete"] is True


def test_incomplete_until_every_chunk_is_settled(client: TestClient) -> None:
    with bus.capture_published():
        deliver_reply(_reply(_inbound(client), "\n\n".join("words " * 200 for _ in range(3))))
    with db.session_scope() as session:
        session.execute(
            update(OUTBOUND).where(OUTBOUND.c.chunk_index == 1).values(status="pending")
        )
    assert client.get(f"/api/v1/sandbox/replies/{SID}", headers=AUTH).json()["complete"] is False


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {AUTH_TOKEN}"}])
def test_sandbox_api_requires_the_bearer_token(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get(f"/api/v1/sandbox/replies/{SID}", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_sandbox_api_is_absent_when_twilio_is_configured(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, TWILIO_ACCOUNT_SID="AC" + "2" * 32)
    response = client.get(f"/api/v1/sandbox/replies/{SID}", headers=AUTH)
    assert response.status_code == 404
    assert "sandbox" in response.json()["detail"]
