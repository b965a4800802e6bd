"""Indexing progress recorded in the database for the console (another process in distributed mode)."""

from __future__ import annotations

import pytest

from libs.common import db
from libs.common.models.code_index import IndexProgress
from services.code_search import repos
from services.code_search.progress import ProgressRecorder, tracked
from tests.e2e.support import SAMPLE_REPO


def _row(name: str) -> IndexProgress | None:
    with db.session_scope() as session:
        return session.get(IndexProgress, name)


def test_a_run_is_recorded_from_start_to_done(database: str) -> None:
    summary = repos.add_repository(str(SAMPLE_REPO), name="sample")
    row = _row("sample")
    assert row is not None
    assert row.phase == "done"
    # Every file read is counted, including those the reading shows to be skipped (binary, minified).
    assert row.total == row.done >= summary.indexed > 0
    assert row.updated_at >= row.started_at


def test_a_failed_run_says_so_and_a_new_run_starts_from_zero(database: str) -> None:
    with pytest.raises(RuntimeError), tracked("broken") as progress:
        progress(3, 10)
        raise RuntimeError("boom")
    row = _row("broken")
    assert row is not None and (row.phase, row.done, row.total) == ("failed", 3, 10)
    ProgressRecorder("broken").phase("starting", restart=True)
    row = _row("broken")
    assert row is not None and (row.phase, row.done, row.total) == ("starting", 0, 0)


def test_writes_are_throttled_but_the_last_file_always_lands(database: str) -> None:
    recorder = ProgressRecorder("many", interval=3600)
    recorder.phase("starting", restart=True)
    for done in range(0, 50):
        recorder(done, 50)
    row = _row("many")
    assert row is not None and row.done == 0  # the first call wrote; the others fell inside the interval
    recorder(50, 50)
    row = _row("many")
    assert row is not None and (row.phase, row.done, row.total) == ("reading", 50, 50)
