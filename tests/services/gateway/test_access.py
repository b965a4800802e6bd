"""The allow-list: listed and invited users are answered; anyone else is refused once, politely,
and nothing about them is stored anywhere."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from libs.common import bus, db
from libs.common.db import Base
from libs.common.events import MessageReceived
from libs.common.models.access import AllowedUser
from libs.common.security import user_id_for
from libs.common.settings import get_settings
from services.gateway import access
from services.gateway.access import REFUSAL, REFUSAL_NO_INVITES, WELCOME, WRONG_CODE, AccessList, access_list
from services.gateway.outbox import relay_once
from services.gateway.webhooks import EMPTY_TWIML
from tests.conftest import apply_env
from tests.services.gateway.conftest import ADDRESS, inbound_params, post_signed

STRANGER = "whatsapp:+447700900123"
CODE = "team-invite-2026-blue"


def sid(n: int) -> str:
    return f"SM{n:032d}"


def rows_everywhere() -> dict[str, int]:
    """Rows in every table of the schema (the API key table included)."""
    with db.session_scope() as session:
        return {
            table.name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in Base.metadata.sorted_tables
        }


def nothing_stored() -> bool:
    return not any(rows_everywhere().values())


def twiml_text(response: object) -> str:
    text: str = response.text  # type: ignore[attr-defined]
    return text


def test_off_by_default(client: TestClient) -> None:
    assert access_list().restricted is False
    assert post_signed(client, inbound_params(sid(1), address=STRANGER)).text == EMPTY_TWIML
    assert rows_everywhere()["inbound_messages"] == 1


def test_a_listed_number_is_answered(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # One entry as a number (hashed when read), one as an id (no number in the settings at all).
    apply_env(monkeypatch, ALLOWED_NUMBERS=f"+1 555 000 1111, {access.hashed_id('+15550002222')}")
    assert access_list().restricted
    for n, address in enumerate((ADDRESS, "whatsapp:+15550002222")):
        response = post_signed(client, inbound_params(sid(n), address=address))
        assert response.status_code == 200 and response.text == EMPTY_TWIML
    with bus.capture_published() as sent:
        relay_once()
    received = [e.data() for e in sent]
    assert all(isinstance(r, MessageReceived) for r in received)
    assert [getattr(r, "user_id", None) for r in received] == [
        user_id_for(ADDRESS), user_id_for("whatsapp:+15550002222"),
    ]
    assert rows_everywhere()["inbound_messages"] == 2


def test_an_unknown_number_is_refused_once_and_nothing_is_stored(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, ALLOWED_NUMBERS="+15550001111", INVITE_CODES=CODE)
    first = post_signed(client, inbound_params(sid(1), body="where is the webhook?", address=STRANGER))
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/xml")
    assert "private code assistant" in first.text and "JOIN &lt;code&gt;" in first.text
    # Every further message in the interval: silence, still nothing stored.
    for n in range(2, 6):
        again = post_signed(client, inbound_params(sid(n), body="hello?", address=STRANGER))
        assert again.status_code == 200 and again.text == EMPTY_TWIML
    assert nothing_stored(), rows_everywhere()
    with bus.capture_published() as sent:
        relay_once()
    assert sent == []


def test_the_refusal_comes_back_after_the_interval(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, ALLOW_LIST="true", ACCESS_REFUSAL_INTERVAL_HOURS="24")
    allow_list = access_list()
    assert allow_list.restricted and not allow_list.codes
    assert REFUSAL_NO_INVITES.split(":")[0] in post_signed(client, inbound_params(sid(1), address=STRANGER)).text
    assert post_signed(client, inbound_params(sid(2), address=STRANGER)).text == EMPTY_TWIML
    # Another stranger is told too: the limit is per sender.
    assert "private code assistant" in post_signed(client, inbound_params(sid(3), address="whatsapp:+3312")).text
    allow_list.refusal_interval = 0.0
    assert "private code assistant" in post_signed(client, inbound_params(sid(4), address=STRANGER)).text
    assert nothing_stored(), rows_everywhere()


def test_an_invite_code_admits(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, INVITE_CODES=f"other-team-code-1, {CODE}")
    joined = post_signed(client, inbound_params(sid(1), body=f"  join {CODE} ", address=STRANGER))
    assert joined.status_code == 200 and WELCOME.split("!")[0] in joined.text
    counts = rows_everywhere()
    assert counts.pop("allowed_users") == 1 and not any(counts.values()), counts  # the JOIN itself is not kept
    with db.session_scope() as session:
        admitted = session.scalars(select(AllowedUser)).one()
    assert admitted.user_id == user_id_for(STRANGER) and admitted.via == "invite"

    asked = post_signed(client, inbound_params(sid(2), body="where is the webhook?", address=STRANGER))
    assert asked.text == EMPTY_TWIML
    assert rows_everywhere()["inbound_messages"] == 1
    # Another gateway process (a fresh allow-list) knows the admission from the database.
    fresh = AccessList(get_settings().access)
    assert not fresh.allowed_cached(user_id_for(STRANGER))
    assert fresh.admitted_in_db(user_id_for(STRANGER))
    # Withdrawn: refused again.
    assert access.remove_user(STRANGER.removeprefix("whatsapp:"))
    refused = post_signed(client, inbound_params(sid(3), address=STRANGER))
    assert "private code assistant" in refused.text and rows_everywhere()["inbound_messages"] == 1


def test_a_wrong_code_is_refused(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, INVITE_CODES=CODE)
    bodies = (f"JOIN {CODE[:-1]}", f"JOIN {CODE}x", f"JOIN {CODE.upper()}", "join nope", "/join")
    answers = [
        post_signed(client, inbound_params(sid(n), body=body, address=STRANGER)) for n, body in enumerate(bodies)
    ]
    assert all(a.status_code == 200 for a in answers)
    # Told once a minute at most ("/join" without a code is no attempt: it is a plain refused message).
    assert WRONG_CODE.split(",")[0] in answers[0].text
    assert [a.text for a in answers[1:4]] == [EMPTY_TWIML] * 3
    assert REFUSAL.split(":")[0] in answers[4].text
    assert nothing_stored(), rows_everywhere()
    access_list().refusal_interval = 0.0
    assert REFUSAL.split(":")[0] in post_signed(client, inbound_params(sid(200), address=STRANGER)).text
    assert nothing_stored(), rows_everywhere()


def test_repotalk_ask_shows_the_refusal(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from repotalk.client import twiml_messages

    apply_env(monkeypatch, INVITE_CODES=CODE)
    response = post_signed(client, inbound_params(sid(1), address=STRANGER))
    assert twiml_messages(response.text) == [REFUSAL]
    assert twiml_messages(EMPTY_TWIML) == []
