"""The gateway with every service's API mounted: API keys, body limits and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from libs.common.api_keys import create_key
from repotalk.services import extra_routers
from services.gateway import limits
from services.gateway.app import create_app
from tests.conftest import apply_env
from tests.services.gateway.conftest import AUTH_TOKEN, STATUS_URL, inbound_params, post_signed, sign


@pytest.fixture
def api(gateway_db: str) -> Iterator[TestClient]:
    app = create_app(extra_routers=extra_routers(), start_relay=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_every_api_route_but_the_sandbox_needs_a_key(api: TestClient) -> None:
    assert api.post("/api/v1/search", json={"query": "x"}).status_code == 401
    assert api.post("/api/v1/repos", json={"source": "/nowhere"}).status_code == 401
    assert api.post("/api/v1/repos/x/reindex").status_code == 401
    assert api.get("/api/v1/analytics/summary").status_code == 401
    key = {"X-API-Key": create_key("ops")}
    assert api.get("/api/v1/analytics/summary", headers=key).status_code == 200
    assert api.post("/api/v1/repos/x/reindex", headers=key).status_code == 404
    # The sandbox is read with the Twilio auth token `repotalk ask` signs its webhooks with.
    assert api.get("/api/v1/sandbox/replies/SM1", headers=key).status_code == 401
    sandbox = api.get("/api/v1/sandbox/replies/SM1", headers={"Authorization": f"Bearer {AUTH_TOKEN}"})
    assert sandbox.status_code == 200


def test_api_bodies_over_the_limit_are_413_with_a_reason(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, MAX_API_REQUEST_BYTES="1000")
    key = {"X-API-Key": create_key("ops")}
    big = {"query": "x" * 2000}
    declared = api.post("/api/v1/search", json=big, headers=key)
    assert declared.status_code == 413
    assert "exceeds the limit of 1000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        body = b'{"query": "' + b"x" * 2000 + b'"}'
        for i in range(0, len(body), 100):
            yield body[i:i + 100]

    streamed = api.post("/api/v1/search", content=chunks(), headers={**key, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert "exceeds the limit of 1000 bytes" in streamed.json()["detail"]
    # Refused before the key is even looked at: no one can make the server read a huge body.
    assert api.post("/api/v1/search", json=big).status_code == 413
    # Within the limit, the request goes through (and is answered on its merits).
    assert api.post("/api/v1/search", json={"query": "x"}).status_code == 401
    bad_length = api.post("/api/v1/search", content=b"{}", headers={**key, "Content-Length": "-1"})
    assert bad_length.status_code == 400 and "Content-Length" in bad_length.json()["detail"]


def test_webhook_limits(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, MAX_REQUEST_BYTES="2048", MAX_API_REQUEST_BYTES="100", GIT_WEBHOOK_SECRET="s")
    # Twilio's status callback takes the generic route: the wrapper holds it to MAX_REQUEST_BYTES.
    params = [("MessageSid", "SM1"), ("MessageStatus", "delivered"), ("Pad", "x" * 4096)]
    response = api.post("/webhooks/twilio/status", data=dict(params),
                        headers={"X-Twilio-Signature": sign(STATUS_URL, params)})
    assert response.status_code == 413 and "2048" in response.json()["detail"]
    # A git push payload is far bigger than an API body, and allowed to be (up to GitHub's 25 MB).
    monkeypatch.setattr(limits, "OTHER_WEBHOOKS_MAX_BYTES", 5000)
    ping = api.post("/webhooks/git", content=b"{" + b" " * 3000 + b"}", headers={"X-GitHub-Event": "ping"})
    assert ping.status_code == 401  # past the size check, at the signature check
    huge = api.post("/webhooks/git", content=b"{" + b" " * 6000 + b"}", headers={"X-GitHub-Event": "ping"})
    assert huge.status_code == 413 and "5000" in huge.json()["detail"]
    # The inbound webhook keeps its fast path (no middleware) and its own limit.
    assert not api.app.user_middleware  # type: ignore[attr-defined]
    assert post_signed(api, inbound_params(body="x" * 4096)).status_code == 413
    assert post_signed(api, inbound_params()).status_code == 200


def test_the_openapi_document_describes_keys_models_and_errors(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"]["scheme"] == "bearer"
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["TwilioAuthToken"]["scheme"] == "bearer"
    seen = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security", [])
            if path.startswith("/webhooks/") or path in ("/health", "/ready"):
                assert not security, (method, path)
                continue
            if path.startswith("/api/v1/sandbox"):
                assert security == [{"TwilioAuthToken": []}]
                continue
            if path.startswith("/api/v1/"):
                seen += 1
                assert {"ApiKeyBearer": []} in security and {"ApiKeyHeader": []} in security, path
                responses = operation["responses"]
                assert {"401", "403", "413", "422"} <= set(responses), path
                ok = next(code for code in responses if code.startswith("2"))
                assert "schema" in responses[ok]["content"]["application/json"], path
                assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorDetail")
    assert seen >= 4


def test_serve_keeps_a_local_key_for_its_user(database: str, tmp_path: Path) -> None:
    from libs.common.api_keys import list_keys, revoke_key, verify
    from repotalk.local_key import ensure_local_key, key_file

    data = tmp_path / "served"
    token = ensure_local_key(data)
    assert token is not None and verify(token) is not None
    assert key_file(data).read_text().strip() == token
    assert key_file(data).stat().st_mode & 0o777 == 0o600
    assert ensure_local_key(data) == token  # the same key at every start
    assert [k.name for k in list_keys()] == ["local"]

    revoke_key("local")  # the user revoked it: a new one replaces it, the old stays refused
    fresh = ensure_local_key(data)
    assert fresh is not None and fresh != token and verify(token) is None

    key_file(data).unlink()  # token lost: the key it was is useless, replaced
    replaced = ensure_local_key(data)
    assert replaced is not None and verify(fresh) is None and verify(replaced) is not None

    # Once the user manages keys themselves, serve creates none.
    revoke_key("local")
    key_file(data).unlink()
    create_key("mine")
    assert ensure_local_key(data) is None and not key_file(data).exists()
