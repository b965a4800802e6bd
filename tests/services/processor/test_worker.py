"""The processor's worker contract, and its handlers fed through the real Celery bus."""

from __future__ import annotations

import threading

from libs.common import bus
from libs.common.events import Envelope, EventType, ReplyReady, SearchRequested, Service
from services.processor import worker
from tests.services.processor.support import ALICE, received


def test_worker_exports_the_service_contract() -> None:
    assert worker.SERVICE is Service.PROCESSOR
    assert set(worker.HANDLERS) == {
        EventType.MESSAGE_RECEIVED, EventType.AI_RESPONSE, EventType.MESSAGE_FAILED, EventType.RETENTION_DUE
    }
    worker.startup()


def test_handlers_run_behind_the_bus(database: str) -> None:
    app = bus.get_celery()
    got: dict[EventType, list[Envelope]] = {EventType.REPLY_READY: [], EventType.SEARCH_REQUESTED: []}
    done = threading.Event()

    def record(envelope: Envelope) -> None:
        got[envelope.type].append(envelope)
        if all(got.values()):
            done.set()

    bus.register_service(app, worker.SERVICE, worker.HANDLERS)
    bus.register_service(app, Service.GATEWAY, {EventType.REPLY_READY: record})
    bus.register_service(app, Service.CODE_SEARCH, {EventType.SEARCH_REQUESTED: record})
    workers: list[bus.EmbeddedWorker] = []
    try:
        for service in (Service.PROCESSOR, Service.GATEWAY, Service.CODE_SEARCH):
            # Started one by one: a WorkController selects its queues on the shared app when built.
            started = bus.EmbeddedWorker(app, service)
            started.start()
            workers.append(started)
        bus.publish(received("SMbus1", "/help"))
        bus.publish(received("SMbus2", "where are sessions stored?"))
        assert done.wait(30), got
    finally:
        for w in workers:
            w.stop()

    [reply] = got[EventType.REPLY_READY]
    [search] = got[EventType.SEARCH_REQUESTED]
    assert reply.correlation_id == "SMbus1" and isinstance(reply.data(), ReplyReady)
    request = search.data()
    assert isinstance(request, SearchRequested)
    assert search.correlation_id == "SMbus2" and request.user_id == ALICE
