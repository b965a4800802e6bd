"""Gateway test helpers: a known auth token, a TestClient without the relay thread, signed posts,
row counts, and a FakeTwilio the real SDK talks to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from libs.common import db
from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User
from services.gateway.app import create_app
from tests.conftest import apply_env
from tests.fakes.twilio_server import FakeTwilio

AUTH_TOKEN = "test-twilio-auth-token"
ADDRESS = "whatsapp:+15550001111"
WEBHOOK_URL = "http://testserver/webhooks/twilio"
STATUS_URL = "http://testserver/webhooks/twilio/status"

Pairs = Sequence[tuple[str, str]]


@pytest.fixture
def gateway_db(database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``database`` fixture (SQLite and Postgres) with a known Twilio auth token, sandbox channel."""
    apply_env(monkeypatch, TWILIO_AUTH_TOKEN=AUTH_TOKEN)
    return database


@pytest.fixture
def client(gateway_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(start_relay=False), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def fake_twilio(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    """A FakeTwilio, with settings pointing the official SDK at it (Twilio channel active)."""
    with FakeTwilio(auth_token=AUTH_TOKEN) as fake:
        apply_env(
            monkeypatch,
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_API_BASE_URL=fake.base_url,
            TWILIO_SEND_BACKOFF_BASE="0.01",
        )
        yield fake


def sign(url: str, params: Pairs, token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, ImmutableMultiDict(list(params)))


def inbound_params(sid: str = "SM" + "0" * 32, body: str = "where do we validate signatures?",
                   address: str = ADDRESS) -> list[tuple[str, str]]:
    return [
        ("MessageSid", sid),
        ("SmsMessageSid", sid),
        ("AccountSid", "AC" + "1" * 32),
        ("From", address),
        ("To", "whatsapp:+14155238886"),
        ("Body", body),
        ("NumMedia", "0"),
        ("ProfileName", "Ada"),
        ("WaId", address.rsplit("+", 1)[-1]),
    ]


def post_signed(
    client: TestClient,
    params: Pairs,
    *,
    path: str = "/webhooks/twilio",
    url: str | None = None,
    token: str = AUTH_TOKEN,
    headers: dict[str, str] | None = None,
) -> Any:  # the TestClient's response
    signed_url = url or f"http://testserver{path}"
    all_headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": sign(signed_url, params, token),
        **(headers or {}),
    }
    return client.post(path, content=urlencode(list(params)), headers=all_headers)


def count(model: type) -> int:
    with db.session_scope() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def gateway_row_counts() -> dict[str, int]:
    return {
        "users": count(User),
        "inbound_messages": count(InboundMessage),
        "outbox": count(OutboxEvent),
        "outbound_messages": count(OutboundMessage),
    }
