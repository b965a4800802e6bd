"""reply.ready -> Twilio through the official SDK (against FakeTwilio), exactly once per chunk."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from libs.common import bus, db
from libs.common.events import Envelope, EventType, MessageFailed, MessageSent, ReplyReady, UserErased, derived_id
from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User
from libs.common.security import encrypt, user_id_for
from services.gateway.channels import Accepted, OutgoingMessage, channel_for
from services.gateway.inbound import InboundMessageIn, record_inbound
from services.gateway.outbox import relay_once
from services.gateway.sender import ChunkInFlight, deliver_reply
from services.gateway.splitting import split_message
from services.gateway.sql import OUTBOUND
from services.gateway.worker import HANDLERS, SERVICE
from tests.conftest import apply_env
from tests.fakes.twilio_server import FakeTwilio
from tests.services.gateway.conftest import ADDRESS

SID = "SM" + "7" * 32
FROM = "whatsapp:+14155238886"


def _user(address: str = ADDRESS, sid: str = SID, hours_ago: float = 0) -> str:
    when = db.utcnow() - timedelta(hours=hours_ago)
    return record_inbound(InboundMessageIn(message_sid=sid, address=address, body="question"), now=when).user_id


def _reply(user_id: str, body: str, correlation_id: str = SID, erase: bool = False, key: str = "") -> Envelope:
    return Envelope.new(
        ReplyReady(user_id=user_id, body=body, erase_user_after=erase),
        correlation_id=correlation_id, source="processor",
        event_id=derived_id(correlation_id, EventType.REPLY_READY, key),
    )


def _rows(reply_id: str) -> list[OutboundMessage]:
    with db.session_scope() as session:
        return list(session.execute(
            select(OutboundMessage).where(OutboundMessage.reply_id == reply_id).order_by(OutboundMessage.chunk_index)
        ).scalars())


def test_one_reply_one_message(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, TWILIO_STATUS_CALLBACK_URL="https://bot.example.com/webhooks/twilio/status")
    reply = _reply(_user(), "Signatures are checked in `services/gateway/signature.py:42`.")
    with bus.capture_published() as sent:
        report = deliver_reply(reply)

    [message] = fake_twilio.wait_for(1)
    assert (message.to, message.from_, message.body) == (
        ADDRESS, FROM, "Signatures are checked in `services/gateway/signature.py:42`.",
    )
    assert message.status_callback == "https://bot.example.com/webhooks/twilio/status"
    assert message.content_sid is None
    assert report.sent == 1 and not report.failed
    [event] = sent
    assert event.type is EventType.MESSAGE_SENT and event.correlation_id == SID
    payload = event.data()
    assert isinstance(payload, MessageSent)
    assert (payload.provider_sid, payload.channel, payload.chunk_index, payload.chunk_count) == (
        message.sid, "twilio", 0, 1,
    )
    [row] = _rows(reply.id)
    assert (row.status, row.provider_sid, row.attempts) == ("queued", message.sid, 1)
    assert row.sent_at is not None


def test_long_reply_goes_out_in_order_in_chunks(fake_twilio: FakeTwilio) -> None:
    body = "\n\n".join(f"Paragraph {i}: " + "the session expires after thirty idle minutes " * 6 for i in range(20))
    expected = split_message(body)
    assert len(expected) > 2
    with bus.capture_published() as sent:
        deliver_reply(_reply(_user(), body))
    messages = fake_twilio.wait_for(len(expected))
    assert [m.body for m in messages] == expected
    assert all(m.body is not None and len(m.body) <= 1600 for m in messages)
    assert [e.data().chunk_index for e in sent] == list(range(len(expected)))  # type: ignore[attr-defined]
    assert len(fake_twilio.messages) == len(expected)


def test_429_then_success_sends_exactly_once(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(status=429, code=20429, times=1)
    reply = _reply(_user(), "hello")
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert fake_twilio.requests == 2
    assert len(fake_twilio.messages) == 1
    assert report.sent == 1 and [e.type for e in sent] == [EventType.MESSAGE_SENT]
    assert _rows(reply.id)[0].status == "queued"


def test_5xx_is_retried(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(status=500, code=20500, times=2)
    deliver_reply(_reply(_user(), "hello"))
    assert fake_twilio.requests == 3 and len(fake_twilio.messages) == 1


def test_persistent_429_fails_after_max_attempts(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, TWILIO_SEND_MAX_ATTEMPTS="3")
    fake_twilio.fail_next(status=429, code=20429, times=10)
    reply = _reply(_user(), "hello")
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert fake_twilio.requests == 3 and fake_twilio.messages == []
    assert report.failed and report.error_code == "20429"
    [event] = sent
    failed = event.data()
    assert isinstance(failed, MessageFailed) and failed.error_code == "20429" and failed.stage == "gateway"
    assert _rows(reply.id)[0].status == "failed"


def test_permanent_error_is_not_retried_and_stops_the_reply(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(status=400, code=21211, times=1, message=f"The 'To' number {ADDRESS} is not valid")
    body = "\n\n".join("word " * 300 for _ in range(3))
    reply = _reply(_user(), body)
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert fake_twilio.requests == 1 and fake_twilio.messages == []
    assert report.failed and report.error_code == "21211"
    assert [e.type for e in sent] == [EventType.MESSAGE_FAILED]
    failure = sent[0].data()
    assert isinstance(failure, MessageFailed) and failure.error_code == "21211"
    assert ADDRESS.split("+")[1] not in failure.reason and "not valid" in failure.reason  # number redacted
    rows = _rows(reply.id)
    assert [r.status for r in rows] == ["failed"] + ["pending"] * (len(rows) - 1)
    # Redelivered: the failure is re-announced with the same id, nothing is sent.
    with bus.capture_published() as again:
        deliver_reply(reply)
    assert fake_twilio.requests == 1
    assert [e.id for e in again] == [e.id for e in sent]


def test_redelivered_reply_is_not_sent_twice(fake_twilio: FakeTwilio) -> None:
    reply = _reply(_user(), "\n\n".join("chunk me " * 150 for _ in range(3)))
    with bus.capture_published() as first:
        deliver_reply(reply)
    sent_count = len(fake_twilio.messages)
    assert sent_count >= 2
    with bus.capture_published() as second:
        report = deliver_reply(reply)
    assert len(fake_twilio.messages) == sent_count
    assert report.sent == 0 and report.already_sent == sent_count
    assert [e.id for e in second] == [e.id for e in first]  # same ids: consumers dedupe


def test_a_live_claim_is_respected_and_an_expired_one_reclaimed(fake_twilio: FakeTwilio) -> None:
    reply = _reply(_user(), "hello")
    with bus.capture_published():
        deliver_reply(reply)  # creates the row; then pretend it is mid-send elsewhere
    table = OUTBOUND
    with db.session_scope() as session:
        session.execute(update(table).values(status="sending", provider_sid=None, updated_at=db.utcnow()))
    fake_twilio.reset()
    with pytest.raises(ChunkInFlight):
        deliver_reply(reply)
    assert fake_twilio.messages == []
    with db.session_scope() as session:
        session.execute(update(table).values(updated_at=db.utcnow() - timedelta(minutes=30)))
    with bus.capture_published():
        deliver_reply(reply)
    assert len(fake_twilio.messages) == 1


def test_outside_the_window_sends_the_template(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, TWILIO_TEMPLATE_CONTENT_SID="HX" + "a" * 32)
    user_id = _user(hours_ago=25)
    with bus.capture_published() as sent:
        report = deliver_reply(_reply(user_id, "Your answer: sessions expire after 30 minutes. " * 50))
    [message] = fake_twilio.wait_for(1)
    assert message.content_sid == "HX" + "a" * 32
    assert message.body is None
    assert message.to == ADDRESS
    variables = json.loads(message.content_variables or "{}")
    assert variables["1"].startswith("Your answer: sessions expire") and len(variables["1"]) <= 1000
    assert report.template
    [event] = sent
    payload = event.data()
    assert isinstance(payload, MessageSent) and payload.template


def test_outside_the_window_without_template_fails_63016(fake_twilio: FakeTwilio) -> None:
    user_id = _user(hours_ago=25)
    reply = _reply(user_id, "too late")
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert fake_twilio.requests == 0
    assert report.failed and report.error_code == "63016"
    [event] = sent
    failed = event.data()
    assert isinstance(failed, MessageFailed) and failed.error_code == "63016" and failed.user_id == user_id
    assert [(r.status, r.error_code) for r in _rows(reply.id)] == [("failed", "63016")]
    with bus.capture_published():
        deliver_reply(reply)
    assert fake_twilio.requests == 0


def test_inside_the_window_is_free_text(fake_twilio: FakeTwilio) -> None:
    deliver_reply(_reply(_user(hours_ago=23), "still in time"))
    [message] = fake_twilio.wait_for(1)
    assert message.body == "still in time" and message.content_sid is None


def test_erase_user_after_the_confirmation(fake_twilio: FakeTwilio) -> None:
    user_id = _user()
    other = _user(address="whatsapp:+15550009999", sid="SM" + "8" * 32)
    with bus.capture_published():
        assert relay_once() == 2  # both users' MessageReceived are published outbox rows now
    reply = _reply(user_id, "Your data has been deleted.", erase=True)
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    [message] = fake_twilio.wait_for(1)
    assert message.body == "Your data has been deleted."
    assert report.erased
    assert [e.type for e in sent] == [EventType.MESSAGE_SENT, EventType.USER_ERASED]
    erased = sent[-1].data()
    assert isinstance(erased, UserErased) and erased.user_id == user_id
    with db.session_scope() as session:
        assert session.get(User, user_id) is None
        assert session.get(User, other) is not None
        assert session.execute(select(InboundMessage).where(InboundMessage.user_id == user_id)).first() is None
        assert session.execute(select(OutboundMessage).where(OutboundMessage.user_id == user_id)).first() is None
        assert session.execute(select(InboundMessage).where(InboundMessage.user_id == other)).first() is not None
        outbox_users = session.execute(select(OutboxEvent.user_id)).scalars().all()
    assert outbox_users == [other]
    # Redelivered after the erasure: nothing to send, the announcement is repeated with the same id.
    with bus.capture_published() as again:
        deliver_reply(reply)
    assert len(fake_twilio.messages) == 1
    assert [e.id for e in again] == [sent[-1].id]


def test_unknown_user_is_reported_not_sent(fake_twilio: FakeTwilio) -> None:
    with bus.capture_published() as sent:
        report = deliver_reply(_reply(user_id_for("whatsapp:+15550004444"), "hello"))
    assert report.failed and fake_twilio.requests == 0
    assert [e.type for e in sent] == [EventType.MESSAGE_FAILED]


def test_blank_reply_sends_nothing(fake_twilio: FakeTwilio) -> None:
    with bus.capture_published() as sent:
        report = deliver_reply(_reply(_user(), "   \n\n  "))
    assert report.chunk_count == 0 and sent == [] and fake_twilio.requests == 0


def test_worker_contract() -> None:
    assert SERVICE.value == "gateway"
    assert set(HANDLERS) == {EventType.REPLY_READY, EventType.RETENTION_DUE, EventType.REDACTION_DUE}


def test_reply_ready_through_a_real_celery_worker(fake_twilio: FakeTwilio) -> None:
    """The worker module wired as the lead's CLI does: register_service + a worker on the gateway queue."""
    from services.gateway import worker

    user_id = _user()
    app = bus.get_celery()
    bus.register_service(app, worker.SERVICE, worker.HANDLERS)
    worker.startup()
    embedded = bus.EmbeddedWorker(app, worker.SERVICE)
    embedded.start()
    try:
        bus.publish(_reply(user_id, "answered by the worker"))
        [message] = fake_twilio.wait_for(1, timeout=30)
    finally:
        embedded.stop()
    assert message.body == "answered by the worker" and message.to == ADDRESS


def test_stored_chunks_stand_against_a_different_plan(fake_twilio: FakeTwilio) -> None:
    """Rows of an earlier delivery (another plan: here one chunk) are what goes out, never a mix."""
    reply = _reply(_user(), "\n\n".join("chunk me " * 150 for _ in range(3)))
    assert len(split_message(reply.data().body)) > 1  # type: ignore[attr-defined]
    now = db.utcnow()
    with db.session_scope() as session:
        session.execute(OUTBOUND.insert().values(
            reply_id=reply.id, correlation_id=SID, chunk_index=0, chunk_count=1, user_id=user_id_for(ADDRESS),
            body_enc=encrypt("the stored plan"), channel="twilio", template=False, status="pending", attempts=0,
            created_at=now, updated_at=now,
        ))
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert [m.body for m in fake_twilio.messages] == ["the stored plan"]
    assert report.chunk_count == 1 and report.sent == 1
    assert [(r.chunk_index, r.status) for r in _rows(reply.id)] == [(0, "queued")]
    assert [e.type for e in sent] == [EventType.MESSAGE_SENT]


def test_a_claim_is_renewed_before_each_retry_and_a_lapsed_one_stops_the_sender(fake_twilio: FakeTwilio) -> None:
    """The lease covers one attempt, not a whole retry sequence: the sender renews it before each retry,
    so a worker that dies mid-send holds its chunk back for one attempt's time only. A sender whose claim
    lapsed meanwhile (another worker may be sending the chunk) stops instead of sending it again."""
    reply = _reply(_user(), "hello")
    fake_twilio.fail_next(status=429, code=20429, times=2)
    twilio = channel_for()
    renewed: list[object] = []

    class Watching:
        name = "twilio"

        def send(self, message: OutgoingMessage) -> Accepted:
            with db.session_scope() as session:
                renewed.append(session.scalar(select(OUTBOUND.c.updated_at).where(OUTBOUND.c.reply_id == reply.id)))
            return twilio.send(message)

    with bus.capture_published():
        deliver_reply(reply, channel=Watching())
    assert len(fake_twilio.messages) == 1 and len(renewed) == 3
    assert renewed[0] < renewed[1] < renewed[2]  # type: ignore[operator]

    lapsing = _reply(_user(sid="SM" + "8" * 32), "again", correlation_id="SM" + "8" * 32)
    fake_twilio.reset()
    fake_twilio.fail_next(status=503, code=None, times=1)

    class Slow:
        name = "twilio"

        def send(self, message: OutgoingMessage) -> Accepted:
            with db.session_scope() as session:  # this attempt outlived the lease
                session.execute(update(OUTBOUND).where(OUTBOUND.c.reply_id == lapsing.id)
                                .values(updated_at=db.utcnow() - timedelta(minutes=5)))
            return twilio.send(message)

    with bus.capture_published(), pytest.raises(ChunkInFlight):
        deliver_reply(lapsing, channel=Slow())
    assert fake_twilio.messages == [] and fake_twilio.requests == 1


def test_each_chunk_is_claimed_before_it_is_sent(fake_twilio: FakeTwilio) -> None:
    """The next chunk is claimed with the previous one's bookkeeping: one that another worker
    claimed meanwhile is left to it (the delivery stops, to be retried), never sent twice."""
    reply = _reply(_user(), "\n\n".join("chunk me " * 150 for _ in range(3)))
    twilio = channel_for()

    class Interfered:
        name = "twilio"

        def send(self, message: OutgoingMessage) -> Accepted:
            accepted = twilio.send(message)
            with db.session_scope() as session:  # another worker takes chunk 1 meanwhile
                session.execute(update(OUTBOUND).where(OUTBOUND.c.reply_id == reply.id)
                                .where(OUTBOUND.c.chunk_index == 1).values(status="sending", updated_at=db.utcnow()))
            return accepted

    with bus.capture_published() as sent, pytest.raises(ChunkInFlight):
        deliver_reply(reply, channel=Interfered())
    assert len(fake_twilio.messages) == 1
    rows = _rows(reply.id)
    assert [r.status for r in rows[:2]] == ["queued", "sending"] and rows[1].attempts == 0
    assert [e.type for e in sent] == [EventType.MESSAGE_SENT]


def test_twilio_client_reads_proxy_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib3

    from services.gateway.twilio_http import KeepAliveHttpClient

    monkeypatch.setenv("HTTPS_PROXY", "http://user:s%40cret@proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = KeepAliveHttpClient("https://api.twilio.com", timeout=5).pool
    assert isinstance(proxied, urllib3.ProxyManager)
    assert proxied.proxy is not None and proxied.proxy.host == "proxy.internal"
    assert proxied.proxy_headers["proxy-authorization"] == urllib3.make_headers(
        proxy_basic_auth="user:s@cret")["proxy-authorization"]
    monkeypatch.setenv("NO_PROXY", "api.twilio.com")
    assert not isinstance(KeepAliveHttpClient("https://api.twilio.com", timeout=5).pool, urllib3.ProxyManager)


def test_unreachable_twilio_is_retried_then_reported(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    apply_env(
        monkeypatch, TWILIO_ACCOUNT_SID="AC" + "e" * 32, TWILIO_AUTH_TOKEN="token",
        TWILIO_API_BASE_URL=f"http://127.0.0.1:{port}", TWILIO_SEND_BACKOFF_BASE="0.01", TWILIO_SEND_MAX_ATTEMPTS="2",
    )
    reply = _reply(_user(), "hello")
    with bus.capture_published() as sent:
        report = deliver_reply(reply)
    assert report.failed
    [event] = sent
    failed = event.data()
    assert isinstance(failed, MessageFailed) and "cannot reach Twilio" in failed.reason
    assert _rows(reply.id)[0].status == "failed"


def test_sdk_reads_through_the_keep_alive_client(fake_twilio: FakeTwilio) -> None:
    """Beyond the create call: a GET with no body, and the SDK's errors, come through unchanged."""
    from twilio.base.exceptions import TwilioRestException

    from services.gateway.channels import twilio_client

    deliver_reply(_reply(_user(), "hello"))
    [message] = fake_twilio.wait_for(1)
    client = twilio_client(fake_twilio.account_sid, fake_twilio.auth_token, fake_twilio.base_url)
    fetched = client.messages(message.sid).fetch()
    assert (fetched.sid, fetched.body, fetched.status) == (message.sid, "hello", "queued")
    with pytest.raises(TwilioRestException) as missing:
        client.messages("SM" + "0" * 32).fetch()
    assert missing.value.status == 404 and missing.value.code == 20404
