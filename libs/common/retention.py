"""The retention job's shared pieces: the event beat publishes, and batched deletes by age.

Beat publishes ``retention.due`` with a cutoff; every service that owns personal data removes its own
rows older than it (services talk only through events). Deleting by a fixed cutoff is idempotent: a
redelivered event, or two beats, delete nothing more.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Column, ColumnElement, Table, delete, select

from libs.common import db
from libs.common.events import Envelope, RetentionDue
from libs.common.settings import Settings, get_settings

# Rows per DELETE: a long single statement would hold locks (and SQLite's one writer) for its duration.
BATCH = 5000


def retention_event(now: datetime | None = None, settings: Settings | None = None) -> Envelope | None:
    """The retention.due event for ``now``; None when retention is off (RETENTION_DAYS=0)."""
    days = (settings or get_settings()).privacy.retention_days
    if days <= 0:
        return None
    now = now or db.utcnow()
    payload = RetentionDue(cutoff=now - timedelta(days=days), days=days)
    # Each run is its own event (a fresh id): analytics dedupes events by id.
    return Envelope.new(payload, correlation_id=f"retention-{now:%Y%m%dT%H%M%S}", source="beat",
                        event_id=uuid.uuid4().hex)


def delete_older(table: Table, age: ColumnElement[datetime] | Column[datetime], cutoff: datetime,
                 *conditions: ColumnElement[bool], batch: int = BATCH) -> int:
    """Delete the rows of ``table`` whose ``age`` is before ``cutoff`` (and ``conditions``), ``batch`` rows per
    transaction; returns how many went."""
    [key] = table.primary_key.columns  # every table the job prunes has a one-column key
    doomed = select(key).where(age < cutoff, *conditions).limit(batch)
    total = 0
    while True:
        with db.get_engine().begin() as conn:
            # A materialised list, not IN (subquery): MySQL-style LIMIT in a subquery is not portable.
            keys = list(conn.execute(doomed).scalars())
            if keys:
                conn.execute(delete(table).where(key.in_(keys)))
        total += len(keys)
        if len(keys) < batch:
            return total
