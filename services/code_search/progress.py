"""Live progress of an indexing run, recorded in ``index_progress`` for other processes to show.

The console (in the gateway) shows a bar while code_search indexes; in distributed mode they are
different processes, so progress goes through the database. Writes are throttled (a few per second
at most) and never allowed to break the indexing they describe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

from libs.common import db
from libs.common.models.code_index import IndexProgress

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.25
# Phases that end or precede reading: they keep the file counts of the run as they are.
_KEEP_COUNTS = frozenset({"starting", "cloning", "done", "failed"})
_TABLE: Table = IndexProgress.__table__  # type: ignore[assignment]


class ProgressRecorder:
    """``progress(done, total)`` for ``index_repository``, written to the database at most every ``interval``."""

    def __init__(self, repo: str, interval: float = MIN_INTERVAL) -> None:
        self.repo = repo
        self.interval = interval
        self._last = 0.0
        self._lock = threading.Lock()

    def phase(self, phase: str, *, restart: bool = False) -> None:
        """A new phase; the counts are kept, unless ``restart`` (a new run) zeroes them."""
        self._write(phase, 0, 0, restart=restart)

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            if done < total and now - self._last < self.interval and done != 0:
                return
            self._last = now
        self._write("reading", done, total)

    def _write(self, phase: str, done: int, total: int, *, restart: bool = False) -> None:
        now = db.utcnow()
        values = {"repo": self.repo, "phase": phase, "done": done, "total": total, "updated_at": now}
        try:
            with db.get_engine().begin() as conn:
                insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(_TABLE)
                statement = insert.values(**values, started_at=now)
                columns = ("phase", "updated_at") if phase in _KEEP_COUNTS else ("phase", "done", "total", "updated_at")
                updates = {k: statement.excluded[k] for k in columns}
                if restart:
                    updates.update({k: statement.excluded[k] for k in ("done", "total", "started_at")})
                conn.execute(statement.on_conflict_do_update(index_elements=["repo"], set_=updates))
        except Exception as exc:
            # Progress is for display only: a failed write must not fail the indexing.
            log.warning("could not record indexing progress of %s: %s", self.repo, type(exc).__name__)


@contextmanager
def tracked(repo: str, first_phase: str = "starting") -> Iterator[ProgressRecorder]:
    """Record a run of ``repo`` from ``first_phase`` to done (or failed, when the block raises)."""
    recorder = ProgressRecorder(repo)
    recorder.phase(first_phase, restart=True)
    try:
        yield recorder
    except BaseException:
        recorder.phase("failed")
        raise
    recorder.phase("done")
