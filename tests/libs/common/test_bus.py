"""The bus delivers each event to every subscriber's queue, in-memory and over real Redis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from libs.common import bus
from libs.common.events import Envelope, EventType, MessageReceived, Service
from tests.conftest import REDIS_URL, apply_env


def _received(sid: str) -> Envelope:
    payload = MessageReceived(message_sid=sid, user_id="u_1", body="hello", received_at=datetime.now(UTC))
    return Envelope.new(payload, correlation_id=sid, source="test")


def _roundtrip(one_worker: bool = False) -> None:
    app = bus.get_celery()
    seen: dict[Service, list[str]] = {Service.PROCESSOR: [], Service.ANALYTICS: []}
    done = threading.Event()

    def recorder(service: Service):  # type: ignore[no-untyped-def]
        def handle(envelope: Envelope) -> None:
            seen[service].append(envelope.correlation_id)
            if all(seen.values()):
                done.set()
        return handle

    workers = []
    for service in seen:
        bus.register_service(app, service, {EventType.MESSAGE_RECEIVED: recorder(service)})
    groups = [tuple(seen)] if one_worker else [(service,) for service in seen]
    for group in groups:
        worker = bus.EmbeddedWorker(app, *group)
        worker.start()
        workers.append(worker)
    try:
        bus.publish(_received("SM123"))
        assert done.wait(15), seen
        assert seen == {Service.PROCESSOR: ["SM123"], Service.ANALYTICS: ["SM123"]}
    finally:
        for worker in workers:
            worker.stop()


def test_memory_broker_delivers_to_every_subscriber(base_env: dict[str, str]) -> None:
    _roundtrip()


def test_redis_broker_delivers_to_every_subscriber(
    base_env: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=redis_prefix)
    _roundtrip(one_worker=True)


def test_capture_published_records_instead_of_sending(base_env: dict[str, str]) -> None:
    with bus.capture_published() as sent:
        bus.publish(_received("SM9"))
    assert [e.correlation_id for e in sent] == ["SM9"]


def test_envelope_roundtrips_its_typed_payload() -> None:
    envelope = _received("SM5")
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert isinstance(again.data(), MessageReceived)
