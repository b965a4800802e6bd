"""The scheduler: retention.due goes to every service that owns personal data, with a cutoff of
RETENTION_DAYS, once at start and then on the Celery beat schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.beat import ScheduleEntry

from libs.common import bus, db
from libs.common.events import EventType, RetentionDue, Service, subscribers
from libs.common.retention import retention_event
from repotalk import beat
from tests.conftest import apply_env


def test_every_service_holding_personal_data_handles_retention() -> None:
    from repotalk.services import worker_module

    owners = {Service.GATEWAY, Service.PROCESSOR, Service.AI_ENGINE, Service.ANALYTICS}
    assert set(subscribers(EventType.RETENTION_DUE)) == owners
    for service in owners:
        assert EventType.RETENTION_DUE in worker_module(service).HANDLERS


def test_the_event_carries_a_cutoff_of_retention_days(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = db.utcnow()
    event = retention_event(now)
    assert event is not None and event.type is EventType.RETENTION_DUE
    due = event.data()
    assert isinstance(due, RetentionDue) and due.days == 90 and due.cutoff == now - timedelta(days=90)
    assert retention_event(now).id != event.id  # type: ignore[union-attr]  # each run is its own event

    apply_env(monkeypatch, RETENTION_DAYS="0")
    assert retention_event(now) is None


def test_the_beat_entry_publishes_retention_due(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, RETENTION_DAYS="30", RETENTION_INTERVAL_HOURS="6")
    app = bus.get_celery()
    assert beat.configure(app)
    entry = app.conf.beat_schedule[beat.RETENTION_ENTRY]
    assert entry["schedule"] == timedelta(hours=6) and entry["task"] == beat.RETENTION_TASK

    scheduler = beat.RetentionScheduler(app, lazy=True)
    with bus.capture_published() as published:
        scheduler.apply_async(ScheduleEntry(name=beat.RETENTION_ENTRY, task=beat.RETENTION_TASK, app=app))
        scheduler.apply_async(ScheduleEntry(name=beat.RETENTION_ENTRY, task=beat.RETENTION_TASK, app=app))
    assert [e.type for e in published] == [EventType.RETENTION_DUE] * 2
    assert all(e.payload["days"] == 30 for e in published)

    apply_env(monkeypatch, RETENTION_DAYS="0")
    assert not beat.configure(bus.get_celery())
    with bus.capture_published() as published:
        assert beat.publish_retention() is False
    assert published == []


def test_serve_runs_the_schedule_in_a_thread(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with bus.capture_published() as published, beat.embedded_beat() as thread:
        assert thread is not None and thread.is_alive()
        assert [e.type for e in published] == [EventType.RETENTION_DUE]  # once at start
    assert not thread.is_alive()

    apply_env(monkeypatch, RETENTION_DAYS="0")
    with beat.embedded_beat() as nothing:
        assert nothing is None
