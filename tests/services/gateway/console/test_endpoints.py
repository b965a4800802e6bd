"""The console's endpoints through the whole gateway application (TestClient): the playground posts
real signed webhooks, the operator pages need an admin API key, indexing goes through code_search's
admin API and reports progress."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from libs.common import db
from libs.common.api_keys import create_key, revoke_key
from libs.common.models import InboundMessage, OutboundMessage, OutboxEvent
from libs.common.models.code_index import IndexProgress, Repository
from libs.common.security import decrypt, encrypt, user_id_for
from repotalk.services import extra_routers
from services.code_search.reconcile import Reconciler
from services.gateway.app import create_app
from services.gateway.console import access
from tests.conftest import apply_env
from tests.e2e.support import SAMPLE_REPO

NUMBER = "+15550001111"
ADDRESS = f"whatsapp:{NUMBER}"


@pytest.fixture
def console(gateway_db: str) -> Iterator[TestClient]:
    app = create_app(extra_routers=extra_routers(), start_relay=False)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def _inbound() -> list[InboundMessage]:
    with db.session_scope() as session:
        return list(session.scalars(select(InboundMessage)))


def _send(console: TestClient, body: str = "where is *the* signature checked?", number: str = NUMBER,
          headers: dict[str, str] | None = None) -> object:
    return console.post("/console/chat/messages", json={"number": number, "body": body}, headers=headers or {})


def test_a_playground_message_is_a_signed_webhook_the_real_handler_stores(console: TestClient) -> None:
    response = _send(console)
    assert response.status_code == 202, response.text
    sid = response.json()["message_sid"]
    [stored] = _inbound()
    assert stored.message_sid == sid
    assert stored.user_id == user_id_for(ADDRESS)
    assert decrypt(stored.body_enc) == "where is *the* signature checked?"
    with db.session_scope() as session:
        events = list(session.scalars(select(OutboxEvent).where(OutboxEvent.correlation_id == sid)))
    assert [e.event_type for e in events] == ["message.received"]


def test_the_signature_follows_the_public_base_url(console: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Behind a proxy the gateway verifies against PUBLIC_BASE_URL: the console signs that same URL.
    apply_env(monkeypatch, PUBLIC_BASE_URL="https://wa.example.com/prefix")
    assert _send(console).status_code == 202
    assert len(_inbound()) == 1


def test_bad_input_is_refused_with_a_reason(console: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_number = _send(console, number="12345")
    assert bad_number.status_code == 400
    assert "E.164" in bad_number.json()["detail"]
    assert _send(console, body="").status_code == 422
    assert _send(console, body="   ").status_code == 400
    # The webhook's own refusal (here: a body over its limit) comes back as it was given.
    apply_env(monkeypatch, MAX_REQUEST_BYTES="2000")
    too_big = _send(console, body="x" * 5000)
    assert too_big.status_code == 413
    assert too_big.json()["detail"].startswith("the webhook refused the message")
    assert _inbound() == []


def _reply(correlation_id: str, body: str, status: str = "delivered") -> None:
    with db.session_scope() as session:
        session.add(OutboundMessage(
            reply_id="r" * 32, correlation_id=correlation_id, chunk_index=0, chunk_count=1,
            user_id=user_id_for(ADDRESS), body_enc=encrypt(body), channel="sandbox", status=status,
            provider_sid="SB" + "1" * 32,
        ))


def test_history_typing_ticks_and_read_receipts(console: TestClient) -> None:
    sid = _send(console).json()["message_sid"]
    waiting = console.get("/console/chat/history", params={"number": NUMBER}).json()
    assert waiting["typing"] is True  # stored, not answered yet
    [question] = waiting["bubbles"]
    assert question["direction"] == "in"
    assert question["status"] == "delivered"
    assert question["html"] == "where is <strong>the</strong> signature checked?"

    _reply(sid, "In *webhooks/security.py:22*:\n```def verify(): ...```")
    answered = console.get("/console/chat/history", params={"number": NUMBER}).json()
    assert answered["typing"] is False
    question, answer = answered["bubbles"]
    assert question["status"] == "read"  # answered: blue ticks
    assert answer["direction"] == "out"
    assert answer["html"] == (
        "In <strong>webhooks/security.py:22</strong>:<br>\n<pre><code>def verify(): ...</code></pre>"
    )
    assert answer["status"] == "delivered"

    # The page reports what it showed as read: a signed status callback through the real handler.
    assert console.post("/console/chat/read", json={"number": NUMBER}).json() == {"read": 1}
    with db.session_scope() as session:
        assert session.scalars(select(OutboundMessage.status)).all() == ["read"]
    # Another number sees none of it.
    other = console.get("/console/chat/history", params={"number": "+447700900123"}).json()
    assert other == {"bubbles": [], "typing": False}


def test_with_a_twilio_account_the_playground_needs_an_admin_key(
    console: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, TWILIO_ACCOUNT_SID="AC" + "2" * 32)
    assert not access.playground_open()
    assert _send(console).status_code == 401
    assert _send(console, headers={"X-API-Key": "rtk_0123456789ab_" + "x" * 43}).status_code == 403
    page = console.get("/console/chat")
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/chat"
    key = create_key("ops")
    assert _send(console, headers={"Authorization": f"Bearer {key}"}).status_code == 202
    console.cookies.set(access.COOKIE, key)
    assert console.get("/console/chat").status_code == 200


def test_operator_pages_need_a_valid_key(console: TestClient) -> None:
    for path in ("/console/repos", "/console/turns", "/console/usage"):
        response = console.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"/console/login?next={path}"
    assert console.get("/console/repos/data").status_code == 401
    assert console.post("/console/repos", json={"source": "/tmp"}).status_code == 401

    wrong = console.post("/console/login", data={"key": "rtk_0123456789ab_" + "x" * 43, "next": "/console/turns"})
    assert wrong.status_code == 403
    assert "not valid" in wrong.text
    assert access.COOKIE not in wrong.cookies

    key = create_key("ops")
    good = console.post("/console/login", data={"key": key, "next": "/console/turns"})
    assert good.status_code == 303
    assert good.headers["location"] == "/console/turns"
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    for path in ("/console/repos", "/console/turns", "/console/usage", "/console/turns?bodies=true"):
        assert console.get(path).status_code == 200, path
    assert "<svg" in console.get("/console/usage").text

    revoke_key("ops")
    assert console.get("/console/repos").status_code == 303
    assert console.get("/console/repos/data").status_code == 403


def test_login_only_redirects_within_the_console(console: TestClient) -> None:
    key = create_key("ops")
    for target in ("https://evil.example/", "//evil.example/console/", "/api/v1/repos"):
        response = console.post("/console/login", data={"key": key, "next": target})
        assert response.headers["location"] == "/console/repos", target


def test_turns_show_bodies_only_when_asked(console: TestClient) -> None:
    from libs.common.models.analytics import SearchQuery, TurnMetrics
    from libs.common.models.conversations import Turn

    with db.session_scope() as session:
        session.add(TurnMetrics(correlation_id="SM1", started_at=db.utcnow(), status="answered", answerer="offline",
                                e2e_ms=120.0, search_ms=8.0, search_kinds="keyword,symbol", cost_usd=0.0012))
        session.add(Turn(correlation_id="SM1", user_id="u_x", kind="question",
                         question_enc=encrypt("zanzibar owl question"), answer_enc=encrypt("zanzibar owl answer")))
        session.add(SearchQuery(event_id="e1", correlation_id="SM1", mode="question", kinds="keyword,symbol",
                                result_count=3, took_ms=8.0, occurred_at=db.utcnow()))
    console.cookies.set(access.COOKIE, create_key("ops"))
    hidden = console.get("/console/turns")
    assert "answered" in hidden.text and "offline" in hidden.text and "$0.0012" in hidden.text
    assert "zanzibar" not in hidden.text
    shown = console.get("/console/turns", params={"bodies": "true"})
    assert "zanzibar owl question" in shown.text and "zanzibar owl answer" in shown.text
    usage = console.get("/console/usage").text
    assert 'aria-label="Searches by ranker"' in usage and ">keyword<" in usage


def _wait_for_job(console: TestClient, headers: dict[str, str], target: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = [j for j in console.get("/console/repos/data", headers=headers).json()["jobs"] if j["target"] == target]
        if jobs and jobs[0]["state"] != "running":
            return jobs[0]
        time.sleep(0.05)
    raise AssertionError(f"the job for {target} did not finish")


def test_adding_a_repository_indexes_it_through_the_admin_api(console: TestClient, tmp_path: Path) -> None:
    source = tmp_path / "copy"
    shutil.copytree(SAMPLE_REPO, source)
    headers = {"X-API-Key": create_key("ops")}
    response = console.post("/console/repos", json={"source": str(source), "name": "copy"}, headers=headers)
    assert response.status_code in (200, 202), response.text
    # The admin API records the request and answers 202; the job waits for code_search to index it,
    # which a code_search replica does on its next pass (here, run by the test).
    assert response.json()["job"]["state"] == "running"
    assert Reconciler().run_once().indexed == ["copy"]
    job = _wait_for_job(console, headers, "copy")
    assert job["state"] == "done", job
    [repo] = [r for r in console.get("/console/repos/data", headers=headers).json()["repos"] if r["name"] == "copy"]
    assert repo["status"] == "ready"
    assert repo["files"] > 10 and repo["symbols"] > 0 and repo["chunks"] > 0
    assert repo["skipped"] == {"binary": 1, "minified": 2, "vendored": 1}
    assert repo["progress"]["phase"] == "done"
    assert repo["progress"]["done"] == repo["progress"]["total"] > 0

    reindexed = console.post("/console/repos/copy/reindex", headers=headers)
    assert reindexed.status_code in (200, 202)
    missing = console.post("/console/repos", json={"source": str(tmp_path / "nowhere")}, headers=headers)
    assert missing.status_code == 400
    assert "not a directory" in missing.json()["detail"]
    unknown = console.post("/console/repos/nothing-here/reindex", headers=headers)
    assert unknown.status_code == 404
    with db.session_scope() as session:
        assert session.get(Repository, "copy") is not None
        progress = session.get(IndexProgress, "copy")
        assert progress is not None and progress.phase in ("done", "reading", "starting")


def test_the_stream_pushes_a_snapshot_then_ends_for_the_browser_to_reconnect(
    console: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.gateway.console import chat

    monkeypatch.setattr(chat, "STREAM_SECONDS", 0.6)
    sid = _send(console).json()["message_sid"]
    with console.stream("GET", "/console/chat/stream", params={"number": NUMBER}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    assert text.startswith("retry: 1000\n\n")
    assert "event: snapshot\n" in text
    snapshot = json.loads(text.split("event: snapshot\ndata: ", 1)[1].split("\n", 1)[0])
    assert [b["id"] for b in snapshot["bubbles"]] == [f"in:{sid}"]
    assert snapshot["typing"] is True
    assert console.get("/console/chat/stream", params={"number": "not a number"}).status_code == 400
