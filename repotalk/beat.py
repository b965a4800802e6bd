"""The scheduler (Celery beat): publishes retention.due every RETENTION_INTERVAL_HOURS, and once at start.

Beat does no work itself: it announces the event and each service prunes its own tables. Its schedule
is kept in memory (the root filesystem is read-only in the deployments); a restart would restart the
interval, so beat also publishes once when it starts (the job is idempotent). Run exactly one beat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.beat import EmbeddedService, ScheduleEntry, Scheduler, Service

from libs.common import bus
from libs.common.retention import retention_event
from libs.common.settings import get_settings

log = logging.getLogger(__name__)

RETENTION_ENTRY = "retention"
# Not a Celery task: the scheduler below publishes the event itself when this entry is due.
RETENTION_TASK = "repotalk.beat.retention"


def publish_retention() -> bool:
    """Publish one retention.due now; False when retention is off (RETENTION_DAYS=0)."""
    event = retention_event()
    if event is None:
        return False
    bus.publish(event)
    bus.flush_batches()  # analytics' copy goes through the batcher
    log.info("retention.due published: data older than %s goes", event.payload["cutoff"])
    return True


class RetentionScheduler(Scheduler):
    """An in-memory scheduler whose entry publishes retention.due through the bus (with a fresh cutoff
    each time) instead of sending a fixed task message."""

    def apply_async(self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if entry.task != RETENTION_TASK:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        if advance:
            entry = self.reserve(entry)
        publish_retention()
        return None


def configure(app: Celery) -> bool:
    """Put the retention entry on ``app``'s beat schedule; False when retention is off."""
    privacy = get_settings().privacy
    if privacy.retention_days <= 0:
        app.conf.beat_schedule = {}
        return False
    app.conf.beat_schedule = {
        RETENTION_ENTRY: {"task": RETENTION_TASK, "schedule": timedelta(hours=privacy.retention_interval_hours)},
    }
    return True


def run() -> None:
    """`repotalk beat`: publish once, then on schedule until SIGTERM/SIGINT."""
    app = bus.get_celery()
    if not configure(app):
        log.warning("RETENTION_DAYS=0: retention is off; beat has nothing to schedule")
    try:
        publish_retention()
    except Exception:
        log.exception("could not publish retention.due at start; the schedule will try again")
    service = Service(app, scheduler_cls=RetentionScheduler, remote_control=False)
    try:
        service.start()
    finally:
        bus.flush_batches()


@contextmanager
def embedded_beat() -> Iterator[threading.Thread | None]:
    """`repotalk serve`: the same schedule in a thread of this process (the in-memory broker's)."""
    app = bus.get_celery()
    if not configure(app):
        yield None
        return
    try:
        publish_retention()
    except Exception:
        log.exception("could not publish retention.due at start")
    beat = EmbeddedService(app, thread=True, scheduler_cls=RetentionScheduler)
    beat.start()
    try:
        yield beat
    finally:
        beat.stop()
