"""The data lifecycle end to end, through every service's real handlers and events (embedded mode, on
SQLite and Postgres): /delete leaves no trace of the user in any table, the retention job removes what
is older than its cutoff everywhere and keeps the anonymous aggregates, and Twilio redaction blanks
bodies at (fake) Twilio."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Table, select

from libs.common import bus, db
from libs.common.events import Envelope, RetentionDue
from libs.common.key_rotation import ENCRYPTED_COLUMNS
from libs.common.models.analytics import TurnMetrics
from libs.common.security import decrypt, user_id_for
from repotalk.client import new_message_sid, signed_webhook
from services.ai_engine import budget
from services.analytics.summary import summary
from tests.conftest import apply_env
from tests.e2e.support import embedded_server, post_webhook, wait_until
from tests.fakes.twilio_server import FakeTwilio

ALICE = "whatsapp:+15550009871"
BOB = "whatsapp:+15550004562"
ACCESS = {"allowed_users"}
ENCRYPTED = {(table.name, name) for table, names in ENCRYPTED_COLUMNS.items() for name in names}


@pytest.fixture
def twilio(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        apply_env(monkeypatch, TWILIO_ACCOUNT_SID=fake.account_sid, TWILIO_AUTH_TOKEN=fake.auth_token,
                  TWILIO_API_BASE_URL=fake.base_url, TWILIO_SEND_BACKOFF_BASE="0.01", RATE_LIMIT_PER_MINUTE="0")
        yield fake


def _replies(fake: FakeTwilio, address: str) -> list[str]:
    return [m.body or "" for m in fake.messages if m.to == address and m.direction != "inbound"]


def _converse(server: str, fake: FakeTwilio, address: str, text: str) -> str:
    """Send ``text`` as ``address`` and wait for its reply; returns the MessageSid."""
    before = len(_replies(fake, address))
    sid = new_message_sid()
    assert post_webhook(server, text, address, sid, fake.auth_token).status_code == 200
    wait_until(lambda: len(_replies(fake, address)) > before, what=f"the reply to {text!r}")
    return sid


def _analytics_turn(sid: str) -> TurnMetrics | None:
    with db.session_scope() as session:
        return session.get(TurnMetrics, sid)


def _traces(needles: list[str]) -> list[str]:
    """Every table.column (encrypted ones decrypted) in which one of ``needles`` appears."""
    found = []
    with db.get_engine().connect() as conn:
        for table in db.Base.metadata.sorted_tables:
            for row in conn.execute(select(table)).mappings():
                for name, value in row.items():
                    if value is None:
                        continue
                    text = str(value)
                    if (table.name, name) in ENCRYPTED:
                        text = decrypt(text)
                    found += [f"{table.name}.{name}: {needle}" for needle in needles if needle in text]
    return found


def _rows_of(table: Table, user_id: str) -> int:
    column = table.c.get("user_id")
    if column is None:
        return 0
    with db.get_engine().connect() as conn:
        return len(conn.execute(select(table).where(column == user_id)).all())


def test_delete_leaves_nothing_of_the_user_in_any_table(twilio: FakeTwilio) -> None:
    alice_id, bob_id = user_id_for(ALICE), user_id_for(BOB)
    with embedded_server() as server:
        asked = _converse(server, twilio, ALICE, "where is the webhook signature verified, quokka-7731?")
        _converse(server, twilio, BOB, "how do sessions expire, wombat-2290?")
        budget.record(asked, alice_id, 0.01, 10, 5)  # what a paid model answer would have charged
        wait_until(lambda: (_analytics_turn(asked) or TurnMetrics()).user_id == alice_id, what="analytics")
        needles = [alice_id, ALICE.split("+")[1], "quokka-7731"]
        assert _traces(needles), "the user's data should be stored before /delete"

        _converse(server, twilio, ALICE, "/delete")
        _converse(server, twilio, ALICE, "YES DELETE")
        assert "erased" in _replies(twilio, ALICE)[-1]

        # The gateway erases after sending the confirmation, then analytics and ai_engine hear user.erased.
        wait_until(lambda: not _traces(needles), timeout=30, what="the erasure to reach every service")
        # Bob is untouched, and Alice's turns still count (anonymously).
        assert any("wombat-2290" in t for t in _traces(["wombat-2290"]))
        assert _rows_of(TurnMetrics.__table__, bob_id) >= 1  # type: ignore[arg-type]
        assert _analytics_turn(asked) is not None
        assert summary(hours=1)["turns"]["received"] >= 4


def _recorded(correlation_id: str) -> bool:
    """Analytics has the whole turn: answered, and every chunk of the reply sent (its end-to-end time)."""
    turn = _analytics_turn(correlation_id)
    return turn is not None and turn.status == "answered" and turn.e2e_ms is not None


def test_retention_removes_what_is_older_than_the_cutoff_and_keeps_aggregates(twilio: FakeTwilio) -> None:
    alice_id, bob_id = user_id_for(ALICE), user_id_for(BOB)
    with embedded_server() as server:
        old = _converse(server, twilio, ALICE, "where is the webhook signature verified?")
        budget.record(old, alice_id, 0.01, 10, 5)
        wait_until(lambda: _recorded(old), what="analytics (old)")
        cutoff = db.utcnow()
        new = _converse(server, twilio, BOB, "how do sessions expire?")
        budget.record(new, bob_id, 0.01, 10, 5)
        wait_until(lambda: _recorded(new), what="analytics (new)")
        before = summary(hours=1)

        due = Envelope.new(RetentionDue(cutoff=cutoff, days=90), correlation_id="retention-test", source="beat")
        bus.publish(due)
        bus.publish(due)  # a redelivery (or a second beat) changes nothing more

        # Every table with a user in it, except the access lists an administrator keeps (allowed users).
        personal = [
            t for t in db.Base.metadata.sorted_tables
            if ("user_id" in t.c or t.name == "users") and t.name not in ACCESS
        ]
        assert {t.name for t in personal} >= {
            "users", "inbound_messages", "outbound_messages", "outbox", "chat_sessions", "turns", "ai_usage",
            "analytics_turns",
        }

        def alice_gone() -> bool:
            return not _traces([alice_id, ALICE.split("+")[1]])

        wait_until(alice_gone, timeout=30, what="Alice's rows to go from every service")
        # Bob's conversation, newer than the cutoff, is all still there.
        for table in personal:
            if table.name not in ("users", "outbox"):
                assert _rows_of(table, bob_id) >= 1, table.name
        assert _traces([BOB.split("+")[1]]) == ["users.address_enc: " + BOB.split("+")[1]]
        # The old turn is still counted, anonymously: the aggregates do not change.
        turn = _analytics_turn(old)
        assert turn is not None and turn.user_id is None and turn.status == "answered"
        after = summary(hours=1)
        assert after["turns"] == {**before["turns"], "users": 1} and before["turns"]["users"] == 2
        assert after["latency_ms"] == before["latency_ms"]
        assert after["ai"] == before["ai"]


def test_bodies_are_redacted_at_twilio_when_asked(twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, TWILIO_REDACT_BODIES="true")
    with embedded_server() as server:
        sid = new_message_sid()
        twilio.add_inbound(sid, ALICE, "whatsapp:+14155238886", "/help")
        assert post_webhook(server, "/help", ALICE, sid, twilio.auth_token).status_code == 200
        assert twilio.wait_for_redactions(1, timeout=30) == [sid]
        wait_until(lambda: _replies(twilio, ALICE), what="the reply")
        [reply] = [m for m in twilio.messages if m.to == ALICE]
        assert reply.body  # a reply is not redacted before Twilio reports it delivered

        url = f"{server}/webhooks/twilio/status"
        params = {"MessageSid": reply.sid, "MessageStatus": "delivered", "AccountSid": twilio.account_sid}
        headers = signed_webhook(url, params, twilio.auth_token)
        assert httpx.post(url, data=params, headers=headers, timeout=10).status_code == 200
        assert twilio.wait_for_redactions(2, timeout=30) == [sid, reply.sid]
        message = twilio.message(reply.sid)
        assert message is not None and message.body == ""
        inbound = twilio.message(sid)
        assert inbound is not None and inbound.body == ""
