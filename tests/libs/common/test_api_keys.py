"""API keys: stored hashed, shown once, revocable, checked by the FastAPI dependency and the CLI."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from libs.common.api_keys import (
    AUTH_RESPONSES,
    AdminKey,
    ApiKeyError,
    create_key,
    list_keys,
    revoke_key,
    verify,
)
from libs.common.db import get_engine, session_scope, utcnow
from libs.common.models.access import ApiKey
from repotalk.cli import app as cli


def test_a_key_is_stored_only_as_its_hash(database: str) -> None:
    token = create_key("ci")
    assert token.startswith("rtk_") and len(token) > 50
    with get_engine().connect() as conn:
        rows = [tuple(str(v) for v in row) for row in conn.execute(text("SELECT * FROM api_keys"))]
    assert len(rows) == 1
    assert not any(token in value or token.split("_")[-1] in value for value in rows[0])
    with session_scope() as session:
        key = session.scalars(select(ApiKey)).one()
    assert key.key_hash == hashlib.sha256(token.encode()).hexdigest()
    assert key.name == "ci" and key.revoked_at is None and key.last_used_at is None


def test_verify_accepts_the_key_and_refuses_anything_else(database: str) -> None:
    token = create_key("ci")
    other = create_key("dashboard")
    key = verify(token)
    assert key is not None and key.name == "ci"
    assert key.last_used_at is not None
    assert verify(other) is not None and verify(other).name == "dashboard"  # type: ignore[union-attr]
    prefix, secret = token.rsplit("_", 1)
    tampered = prefix + "_" + ("A" if secret[0] != "A" else "B") + secret[1:]
    for wrong in ("", "rtk_", tampered, token + "x", token[:-1], "Bearer " + token, "not-a-key"):
        assert verify(wrong) is None, wrong
    # The right secret under another key's prefix is wrong too.
    other_prefix = other.rsplit("_", 1)[0]
    assert verify(other_prefix + "_" + secret) is None


def test_a_revoked_key_is_refused_and_its_name_can_be_reused(database: str) -> None:
    token = create_key("ci")
    with pytest.raises(ApiKeyError, match="active key named 'ci'"):
        create_key("ci")
    assert revoke_key("ci") is True
    assert revoke_key("ci") is False
    assert revoke_key("never-created") is False
    assert verify(token) is None
    fresh = create_key("ci")
    assert verify(fresh) is not None and verify(token) is None
    assert [k.name for k in list_keys()] == ["ci"]
    listed = list_keys(include_revoked=True)
    assert len(listed) == 2 and sum(1 for k in listed if k.revoked_at is not None) == 1


def test_key_names_are_checked(database: str) -> None:
    for bad in ("", " ", "-x", "a b", "x" * 65, "naïve"):
        with pytest.raises(ApiKeyError):
            create_key(bad)


def test_last_use_is_recorded_at_most_once_a_minute(database: str) -> None:
    token = create_key("ci")
    first = verify(token)
    assert first is not None and first.last_used_at is not None
    again = verify(token)
    assert again is not None and again.last_used_at == first.last_used_at
    old = utcnow() - timedelta(minutes=5)
    with session_scope() as session:
        session.execute(update(ApiKey).values(last_used_at=old))
    later = verify(token)
    assert later is not None and later.last_used_at is not None and later.last_used_at > old


def _app() -> FastAPI:
    api = FastAPI()

    @api.get("/api/v1/thing", responses=AUTH_RESPONSES)
    def thing(key: AdminKey) -> dict[str, str]:
        return {"key": key.name}

    return api


def test_the_dependency_takes_a_bearer_or_an_x_api_key_header(database: str) -> None:
    token = create_key("ci")
    with TestClient(_app()) as client:
        assert client.get("/api/v1/thing", headers={"Authorization": f"Bearer {token}"}).json() == {"key": "ci"}
        assert client.get("/api/v1/thing", headers={"X-API-Key": token}).json() == {"key": "ci"}

        missing = client.get("/api/v1/thing")
        assert missing.status_code == 401
        assert "API key is required" in missing.json()["detail"]
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        # Another scheme is no key at all.
        assert client.get("/api/v1/thing", headers={"Authorization": f"Basic {token}"}).status_code == 401

        wrong = client.get("/api/v1/thing", headers={"Authorization": "Bearer rtk_000000000000_" + "A" * 43})
        assert wrong.status_code == 403 and wrong.json() == {"detail": "the API key is not valid"}
        assert client.get("/api/v1/thing", headers={"X-API-Key": "garbage"}).status_code == 403

        revoke_key("ci")
        revoked = client.get("/api/v1/thing", headers={"X-API-Key": token})
        assert revoked.status_code == 403 and "revoked" in revoked.json()["detail"]


def test_the_openapi_document_describes_the_key(database: str) -> None:
    with TestClient(_app()) as client:
        doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"] == {
        "type": "http", "scheme": "bearer", "description": schemes["ApiKeyBearer"]["description"],
    }
    assert schemes["ApiKeyHeader"]["in"] == "header" and schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    operation = doc["paths"]["/api/v1/thing"]["get"]
    assert {"ApiKeyBearer": []} in operation["security"] and {"ApiKeyHeader": []} in operation["security"]
    assert {"401", "403", "413", "422"} <= set(operation["responses"])


def test_the_cli_creates_lists_and_revokes(database: str) -> None:
    runner = CliRunner()
    created = runner.invoke(cli, ["api-key", "create", "deploy-bot"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert verify(token) is not None

    listed = runner.invoke(cli, ["api-key", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["deploy-bot"]
    assert token not in listed.stdout and token.rsplit("_", 1)[1] not in listed.stdout
    assert rows[0]["prefix"].startswith(token.rsplit("_", 1)[0])
    plain = runner.invoke(cli, ["api-key", "list"])
    assert "deploy-bot" in plain.stdout and token not in plain.stdout

    again = runner.invoke(cli, ["api-key", "create", "deploy-bot"])
    assert again.exit_code == 1 and "revoke it first" in again.output

    revoked = runner.invoke(cli, ["api-key", "revoke", "deploy-bot"])
    assert revoked.exit_code == 0 and verify(token) is None
    assert runner.invoke(cli, ["api-key", "revoke", "deploy-bot"]).exit_code == 1
    assert "no API keys" in runner.invoke(cli, ["api-key", "list"]).stdout
