"""The inbound writer: webhooks' messages stored by one thread, several per transaction, each
answered with its own outcome; one bad message fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, select

from libs.common import db
from libs.common.models.messaging import InboundMessage, OutboxEvent
from services.gateway import inbound_writer
from services.gateway.inbound import Disposition, InboundMessageIn, InboundOutcome, store_inbound
from services.gateway.inbound_writer import InboundWriter
from tests.services.gateway.conftest import count


def _message(sid: str, number: int = 1) -> InboundMessageIn:
    return InboundMessageIn(message_sid=sid, address=f"whatsapp:+1555000{number:04d}", body=f"question {sid}")


@pytest.fixture
def writer(gateway_db: str) -> Iterator[InboundWriter]:
    woken = threading.Event()
    writer = InboundWriter(on_queued=woken.set)
    writer.start()
    writer.woken = woken  # type: ignore[attr-defined]
    yield writer
    writer.stop()


async def _record_all(writer: InboundWriter, messages: list[InboundMessageIn]) -> list[InboundOutcome | BaseException]:
    return await asyncio.gather(*(writer.record(m) for m in messages), return_exceptions=True)


def test_each_request_gets_its_own_outcome(writer: InboundWriter) -> None:
    messages = [_message("SMa", 1), _message("SMb", 2), _message("SMa", 1), _message("SMc", 1)]
    outcomes = asyncio.run(_record_all(writer, messages))

    assert [o.disposition for o in outcomes] == [  # type: ignore[union-attr]
        Disposition.ACCEPTED, Disposition.ACCEPTED, Disposition.DUPLICATE, Disposition.ACCEPTED,
    ]
    assert count(InboundMessage) == 3 and count(OutboxEvent) == 3
    assert writer.woken.is_set()  # type: ignore[attr-defined]


def test_a_failing_message_fails_alone(writer: InboundWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def store(conn: Connection, message: InboundMessageIn) -> InboundOutcome:
        if message.message_sid == "SMfirst":
            release.wait(10)  # holds the writer so the next three queue up as one batch
        if message.message_sid == "SMbad":
            raise ValueError("cannot store this one")
        return store_inbound(conn, message)

    monkeypatch.setattr(inbound_writer, "store_inbound", store)

    async def scenario() -> list[InboundOutcome | BaseException]:
        first = asyncio.ensure_future(writer.record(_message("SMfirst", 1)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(writer.record(_message(sid, n))) for n, sid in enumerate(("SMa", "SMbad", "SMc"))]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    first, a, bad, c = asyncio.run(scenario())
    assert isinstance(bad, ValueError)
    assert all(isinstance(o, InboundOutcome) and o.disposition is Disposition.ACCEPTED for o in (first, a, c))
    with db.session_scope() as session:
        stored = set(session.execute(select(InboundMessage.message_sid)).scalars())
    assert stored == {"SMfirst", "SMa", "SMc"}
    assert count(OutboxEvent) == 3


def test_a_stopped_writer_refuses_instead_of_hanging(gateway_db: str) -> None:
    writer = InboundWriter()
    writer.start()
    assert asyncio.run(writer.record(_message("SMbefore"))).disposition is Disposition.ACCEPTED
    writer.stop()
    assert not writer.running
    with pytest.raises(RuntimeError):
        asyncio.run(writer.record(_message("SMafter")))
    assert count(InboundMessage) == 1


def test_database_errors_reach_the_request(gateway_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from tests.conftest import apply_env

    writer = InboundWriter()
    writer.start()
    try:
        assert asyncio.run(writer.record(_message("SMok"))).disposition is Disposition.ACCEPTED
        apply_env(monkeypatch, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
        with pytest.raises(OperationalError):
            asyncio.run(writer.record(_message("SMlost")))
    finally:
        writer.stop()
