"""Events that are ready together travel together: what is published inside ``bus.coalescing`` goes out as one
task per subscriber (up to HOP_BATCH_MAX events), over real Redis; each event of a batch is handled once, what the
batch's handlers publish travels on together, and a failure is retried or reported for its own event only."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from libs.common import bus
from libs.common.events import (
    Envelope,
    EventType,
    MessageReceived,
    SearchRequested,
    Service,
    many_task_name,
    task_name,
)
from tests.conftest import REDIS_URL, apply_env, queued_tasks
from tests.e2e.support import wait_until


@pytest.fixture
def on_redis(base_env: dict[str, str], redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    apply_env(monkeypatch, BROKER_URL=REDIS_URL, BROKER_KEY_PREFIX=redis_prefix)
    yield redis_prefix


def _received(sid: str) -> Envelope:
    payload = MessageReceived(message_sid=sid, user_id="u_1", body="hello", received_at=datetime.now(UTC))
    return Envelope.new(payload, correlation_id=sid, source="test")


def test_events_published_together_go_as_one_task_per_subscriber(on_redis: str) -> None:
    with bus.coalescing() as held:
        assert held
        for i in range(5):
            bus.publish(_received(f"SM{i}"))
        assert queued_tasks(on_redis, "processor") == []  # nothing goes out before the block ends
    (task,) = queued_tasks(on_redis, "processor")
    assert task[0] == many_task_name(Service.PROCESSOR)
    assert [Envelope.from_json(item["event"]).correlation_id for item in task[1]] == [f"SM{i}" for i in range(5)]


def test_a_lone_event_goes_as_an_ordinary_task_and_the_limit_splits_a_burst(
    on_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with bus.coalescing():
        bus.publish(_received("SM1"))
    assert [name for name, _ in queued_tasks(on_redis, "processor")] == [task_name(Service.PROCESSOR)]

    apply_env(monkeypatch, HOP_BATCH_MAX="3")
    with bus.coalescing():
        for i in range(7):
            bus.publish(_received(f"SM{i}"))
    names = [name for name, _ in queued_tasks(on_redis, "processor")][1:]
    assert names == [many_task_name(Service.PROCESSOR)] * 2 + [task_name(Service.PROCESSOR)]


def test_with_hop_batch_max_one_nothing_is_held(on_redis: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, HOP_BATCH_MAX="1")
    with bus.coalescing() as held:
        assert not held
        bus.publish(_received("SM1"))
        bus.publish(_received("SM2"))
        assert [name for name, _ in queued_tasks(on_redis, "processor")] == [task_name(Service.PROCESSOR)] * 2


def test_nothing_is_sent_when_the_block_raises(on_redis: str) -> None:
    with pytest.raises(RuntimeError), bus.coalescing():
        bus.publish(_received("SM1"))
        raise RuntimeError("the caller retries the whole of it")
    assert queued_tasks(on_redis, "processor") == []


class _Worker:
    """An embedded worker over Redis for the processor's queue, with handlers that count what they see."""

    def __init__(self, handlers: dict[EventType, Callable[[Envelope], None]]) -> None:
        self.app = bus.get_celery()
        bus.register_service(self.app, Service.PROCESSOR, handlers)
        self.worker = bus.EmbeddedWorker(self.app, Service.PROCESSOR)

    def __enter__(self) -> _Worker:
        self.worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()


def test_a_batch_is_handled_event_by_event_and_what_it_publishes_travels_on_together(on_redis: str) -> None:
    seen: Counter[str] = Counter()

    def on_received(envelope: Envelope) -> None:
        seen[envelope.correlation_id] += 1
        request = SearchRequested(session_id="s", user_id="u_1", query="where?")
        bus.publish(Envelope.new(request, correlation_id=envelope.correlation_id, source="processor"))

    with bus.coalescing():
        for i in range(4):
            bus.publish(_received(f"SM{i}"))
    with _Worker({EventType.MESSAGE_RECEIVED: on_received}):
        wait_until(lambda: len(queued_tasks(on_redis, "code_search")) >= 1 and sum(seen.values()) == 4, 15)
    assert seen == {f"SM{i}": 1 for i in range(4)}
    (task,) = queued_tasks(on_redis, "code_search")
    assert task[0] == many_task_name(Service.CODE_SEARCH)
    assert sorted(Envelope.from_json(item["event"]).correlation_id for item in task[1]) == [f"SM{i}" for i in range(4)]


def test_in_a_batch_only_the_event_that_failed_runs_again(on_redis: str) -> None:
    seen: Counter[str] = Counter()
    failed_for: list[str] = []

    def on_received(envelope: Envelope) -> None:
        seen[envelope.correlation_id] += 1
        if envelope.correlation_id == "SM_flaky" and seen["SM_flaky"] == 1:
            raise ConnectionError("the database went away for a moment")  # transient: retried
        if envelope.correlation_id == "SM_broken":
            raise bus.PermanentError("cannot be answered")  # permanent: reported, not retried

    def on_failed(envelope: Envelope) -> None:
        failed_for.append(envelope.correlation_id)

    with bus.coalescing():
        for sid in ("SM_a", "SM_flaky", "SM_broken", "SM_b"):
            bus.publish(_received(sid))
    with _Worker({EventType.MESSAGE_RECEIVED: on_received, EventType.MESSAGE_FAILED: on_failed}):
        wait_until(lambda: seen["SM_flaky"] == 2 and failed_for == ["SM_broken"], 15)
        time.sleep(1.0)  # time for anything else to (wrongly) run again
    assert seen == {"SM_a": 1, "SM_flaky": 2, "SM_broken": 1, "SM_b": 1}
    assert failed_for == ["SM_broken"]
