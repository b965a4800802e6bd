"""The code_search worker: search.requested in, exactly one search.completed out (same id on redelivery)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common import bus
from libs.common.events import Envelope, EventType, SearchCompleted, SearchRequested, Service, derived_id
from services.code_search import worker
from services.code_search.engine import index_repository
from services.code_search.index import get_index
from tests.conftest import apply_env


def requested(query: str, sid: str = "SM0001", **fields: object) -> Envelope:
    payload = SearchRequested(session_id="s1", user_id="u_hash", query=query, **fields)
    return Envelope.new(payload, correlation_id=sid, source="processor")


def test_the_worker_contract() -> None:
    assert worker.SERVICE is Service.CODE_SEARCH
    assert set(worker.HANDLERS) == {EventType.SEARCH_REQUESTED, EventType.REPO_INDEX_REQUESTED}


def test_a_search_request_publishes_one_completion_with_a_stable_id(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    envelope = requested("where is the webhook signature verified?", limit=3)
    with bus.capture_published() as sent:
        worker.HANDLERS[EventType.SEARCH_REQUESTED](envelope)
        worker.HANDLERS[EventType.SEARCH_REQUESTED](envelope)  # redelivered
    assert len(sent) == 2
    first, again = sent
    assert first.id == again.id == derived_id("SM0001", EventType.SEARCH_COMPLETED)
    assert first.type is EventType.SEARCH_COMPLETED and first.correlation_id == "SM0001"
    assert first.source == "code_search"
    completed = first.data()
    assert isinstance(completed, SearchCompleted)
    assert completed.request.query == "where is the webhook signature verified?"
    assert len(completed.hits) == 3 and completed.hits[0].path == "webhooks/security.py"
    assert completed.kinds == ["symbol", "keyword"] and completed.error is None and completed.took_ms > 0


def test_a_bad_pattern_completes_with_an_error_instead_of_failing(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    with bus.capture_published() as sent:
        worker.handle_search_requested(requested("foo(", mode="pattern", repos=["sample_repo"]))
    completed = sent[0].data()
    assert isinstance(completed, SearchCompleted)
    assert completed.hits == [] and completed.error is not None and completed.error.startswith("invalid pattern")


def test_parse_repos_accepts_names_and_plain_paths() -> None:
    assert worker.parse_repos("api=/srv/api, /srv/web ,\nlib=~/lib,") == [
        ("api", Path("/srv/api")),
        (None, Path("/srv/web")),
        ("lib", Path("~/lib").expanduser()),
    ]
    assert worker.parse_repos("") == []


def test_startup_indexes_the_configured_repositories(
    database: str, sample_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_env(monkeypatch, REPOS=f"relay={sample_repo},{tmp_path / 'missing'}")
    try:
        worker.startup()  # the missing one is logged, not fatal
        assert set(get_index().repositories()) == {"relay"}
        worker.startup()  # incremental: nothing changed
        assert set(get_index().repositories()) == {"relay"}
    finally:
        worker.shutdown()  # the reconcile loop startup() began
