"""The application: health, readiness, error handling, extra routers and the relay's lifecycle."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from fastapi import APIRouter, Request, Response
from fastapi.testclient import TestClient
from starlette.middleware.gzip import GZipMiddleware

from libs.common import bus
from libs.common.events import EventType
from services.gateway.app import create_app
from services.gateway.webhooks import EMPTY_TWIML
from tests.conftest import apply_env
from tests.services.gateway.conftest import inbound_params, post_signed


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_with_database_and_memory_broker(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"


def test_ready_with_real_redis(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import REDIS_URL

    apply_env(monkeypatch, BROKER_URL=REDIS_URL)
    assert client.get("/ready").status_code == 200


def test_ready_names_an_unreachable_broker(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, BROKER_URL="redis://127.0.0.1:1/0", BROKER_PUBLISH_TIMEOUT="0.5")
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]
    assert "broker" in response.json()["detail"]


def test_ready_names_an_unreachable_database(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["failed"] == ["database"]


def test_webhook_answers_503_with_a_reason_when_the_database_is_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    response = post_signed(client, inbound_params())
    assert response.status_code == 503
    assert "database" in response.json()["detail"]
    assert "Traceback" not in response.text


def test_errors_never_leak_a_stack_trace_and_validation_gives_reasons(gateway_db: str) -> None:
    extra = APIRouter()

    @extra.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals whatsapp:+15550001111")

    @extra.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    with TestClient(create_app(extra_routers=[extra], start_relay=False), raise_server_exceptions=False) as client:
        assert client.get("/items/7").json() == {"item_id": 7}

        invalid = client.get("/items/not-a-number")
        assert invalid.status_code == 422
        [error] = invalid.json()["detail"]
        assert error["loc"] == ["path", "item_id"] and error["msg"]
        assert "not-a-number" not in invalid.text  # inputs are not echoed back

        crashed = client.get("/boom")
        assert crashed.status_code == 500
        assert crashed.json()["detail"].startswith("internal error")
        assert "secret internals" not in crashed.text and "Traceback" not in crashed.text

        assert client.get("/no/such/route").status_code == 404


def test_lifespan_relay_publishes_after_the_webhook(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, OUTBOX_RELAY_INTERVAL="30")  # only wake() can explain a prompt publish
    with bus.capture_published() as sent, TestClient(create_app()) as client:
        assert client.app.state.relay is not None and client.app.state.relay.running  # type: ignore[attr-defined]
        assert post_signed(client, inbound_params()).status_code == 200
        deadline = time.monotonic() + 20
        while not sent and time.monotonic() < deadline:
            time.sleep(0.01)
        relay = client.app.state.relay  # type: ignore[attr-defined]
    assert [e.type for e in sent] == [EventType.MESSAGE_RECEIVED]
    assert not relay.running


def test_user_middleware_sees_inbound_webhooks(gateway_db: str) -> None:
    """The inbound webhook skips the generic layers only while there is no user middleware: one
    added later (tracing, say) sees it like every other request, with the same answers."""
    seen: list[str] = []
    app = create_app(start_relay=False)

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        seen.append(request.url.path)
        return await call_next(request)

    with TestClient(app, raise_server_exceptions=False) as client:
        assert post_signed(client, inbound_params()).text == EMPTY_TWIML
        assert post_signed(client, inbound_params(), token="wrong-token").status_code == 403
        assert client.get("/health").status_code == 200
    assert seen == ["/webhooks/twilio", "/webhooks/twilio", "/health"]


def test_inbound_webhook_errors_match_the_generic_path(gateway_db: str) -> None:
    """Shortcut or not, refusals carry the same status and reason."""
    bodies = []
    for middleware in (False, True):
        app = create_app(start_relay=False)
        if middleware:
            app.add_middleware(GZipMiddleware)
        with TestClient(app, raise_server_exceptions=False) as client:
            refused = post_signed(client, inbound_params(), token="wrong-token")
            missing = post_signed(client, [(k, v) for k, v in inbound_params() if k != "From"])
            wrong_type = client.post("/webhooks/twilio", content=b"{}", headers={"Content-Type": "text/plain"})
        bodies.append([(r.status_code, r.json()) for r in (refused, missing, wrong_type)])
    assert bodies[0] == bodies[1]
    assert [status for status, _ in bodies[0]] == [403, 400, 415]
