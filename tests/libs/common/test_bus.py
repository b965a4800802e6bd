"""The bus delivers each event to every subscriber's queue, in-memory and over real Redis."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from libs.common import bus
from libs.common.events import Envelope, EventType, MessageReceived, Service
from tests.conftest import REDIS_URL, apply_env


def _received(sid: str) -> Envelope:
    payload = MessageReceived(message_sid=sid, user_id="u_1", body="hello", received_at=datetime.now(UTC))
    return Envelope.new(payload, correlation_id=sid, source="test")


def _roundtrip(one_worker: bool = False, publish_first: bool = False) -> None:
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
    if publish_first:
        bus.publish(_received("SM123"))
        bus.flush_batches()
    for group in groups:
        worker = bus.EmbeddedWorker(app, *group)
        worker.start()
        workers.append(worker)
    try:
        if not publish_first:
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


@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_an_event_published_before_any_worker_declared_its_queue_is_delivered(
    broker: str, base_env: dict[str, str], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Publishes do not declare queues (the consuming worker does): a fresh broker must still keep the task.
    if broker == "redis":
        apply_env(monkeypatch, BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=request.getfixturevalue("redis_prefix"))
    _roundtrip(one_worker=broker == "redis", publish_first=True)


def test_capture_published_records_instead_of_sending(base_env: dict[str, str]) -> None:
    with bus.capture_published() as sent:
        bus.publish(_received("SM9"))
    assert [e.correlation_id for e in sent] == ["SM9"]


def test_envelope_roundtrips_its_typed_payload() -> None:
    envelope = _received("SM5")
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert isinstance(again.data(), MessageReceived)


def test_batched_subscriber_gets_many_events_in_one_batch(base_env: dict[str, str]) -> None:
    """Analytics' copies travel in batches: its batch handler sees several events at once."""
    app = bus.get_celery()
    batches: list[list[str]] = []
    done = threading.Event()

    def on_batch(envelopes: list[Envelope]) -> None:
        batches.append([e.correlation_id for e in envelopes])
        if sum(len(b) for b in batches) >= 20:
            done.set()

    bus.register_service(app, Service.ANALYTICS, {}, on_batch)
    worker = bus.EmbeddedWorker(app, Service.ANALYTICS)
    worker.start()
    try:
        for i in range(20):
            bus.publish(_received(f"SM{i}"))
        assert done.wait(15), batches
    finally:
        worker.stop()
    assert sorted(sid for batch in batches for sid in batch) == sorted(f"SM{i}" for i in range(20))
    assert len(batches) < 20


def test_published_task_headers_carry_no_message_body(
    base_env: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery copies repr(args) into each message's headers unless told otherwise: bodies must not leak."""
    import redis as redis_lib

    apply_env(monkeypatch, BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=redis_prefix)
    bus.publish(_received("SM77"))
    client = redis_lib.Redis.from_url(REDIS_URL)
    raw = client.lrange(f"{redis_prefix}processor", 0, -1)
    assert raw, "the processor's queue should hold the task"
    headers = json.loads(raw[0])["headers"]
    assert "hello" not in json.dumps(headers)
