"""POST /api/v1/search."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs.common.api_keys import create_key
from services.code_search.api import router
from services.code_search.engine import index_repository


@pytest.fixture
def client(database: str, sample_repo: Path) -> TestClient:
    index_repository(sample_repo)
    app = FastAPI()
    app.include_router(router)
    return TestClient(app, headers={"Authorization": f"Bearer {create_key('search-test')}"})


def test_a_question_returns_hits(client: TestClient) -> None:
    response = client.post("/api/v1/search", json={"query": "where is the webhook signature verified?", "limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert len(body["hits"]) == 2 and body["error"] is None and body["kinds"] == ["symbol", "keyword"]
    assert body["hits"][0] | {"score": 0, "snippet": ""} == {
        "repo": "sample_repo", "path": "webhooks/security.py", "line": 22, "end_line": 31,
        "symbol": "verify_twilio_signature", "kind": "function", "language": "python", "score": 0, "snippet": "",
        "url": None,
    }


def test_a_pattern_search(client: TestClient) -> None:
    response = client.post(
        "/api/v1/search", json={"query": r"def \w+_signature", "mode": "pattern", "repos": ["sample_repo"]}
    )
    assert response.status_code == 200
    assert {(h["path"], h["line"]) for h in response.json()["hits"]} == {
        ("webhooks/security.py", 15), ("webhooks/security.py", 22), ("webhooks/security.py", 34),
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"query": ""}, "empty"),
        ({"query": "   "}, "empty"),
        ({"query": "x" * 1500}, "too long"),
        ({"query": "x" * 100_000}, "too long"),
        ({"query": "(unclosed", "mode": "pattern"}, "invalid pattern"),
        ({"query": "re:(unclosed"}, "invalid pattern"),
        ({"query": "token path:../../etc/passwd"}, "leaves the repository"),
        ({"query": "token lang:klingon"}, "unknown language"),
        ({"query": "path:src"}, "nothing to search"),
    ],
)
def test_unusable_queries_are_400_with_a_reason(client: TestClient, body: dict[str, object], reason: str) -> None:
    response = client.post("/api/v1/search", json=body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]


def test_malformed_requests_are_422(client: TestClient) -> None:
    assert client.post("/api/v1/search", json={"query": "x", "mode": "sql"}).status_code == 422
    assert client.post("/api/v1/search", json={"query": "x", "limit": 0}).status_code == 422


def test_an_unknown_repository_is_an_error_not_a_failure(client: TestClient) -> None:
    response = client.post("/api/v1/search", json={"query": "session", "repos": ["nope"]})
    assert response.status_code == 200
    assert response.json()["hits"] == [] and "nope" in response.json()["error"]


def test_filters_and_files_in_the_response(client: TestClient) -> None:
    response = client.post("/api/v1/search", json={"query": "session path:sessions/ lang:python", "limit": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["hits"] and all(h["path"].startswith("sessions/") for h in body["hits"])
    assert [f["path"] for f in body["files"]] == list(dict.fromkeys(h["path"] for h in body["hits"]))


def test_searching_needs_an_api_key(client: TestClient) -> None:
    anonymous = TestClient(client.app)
    body = {"query": "where is the webhook signature verified?"}
    missing = anonymous.post("/api/v1/search", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.post("/api/v1/search", json=body, headers={"X-API-Key": "nope"}).status_code == 403
    token = client.headers["Authorization"].removeprefix("Bearer ")
    assert anonymous.post("/api/v1/search", json=body, headers={"X-API-Key": token}).status_code == 200
