"""Each code_search replica converges its own index (its own INDEX_DIR) to the catalog's desired state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import delete

from libs.common import bus, db
from libs.common.events import Envelope, EventType, RepoIndexRequested
from libs.common.models.code_index import Repository
from services.code_search import repos, worker
from services.code_search.engine import index_repository, search
from services.code_search.index import get_index
from services.code_search.reconcile import STATE_FILE, Reconciler, local_generations, reconciler
from tests.conftest import apply_env
from tests.e2e.support import SAMPLE_REPO, wait_until


def on_replica(monkeypatch: pytest.MonkeyPatch, index_dir: Path) -> None:
    """Settings as a replica with its index in ``index_dir`` has them (same database, its own disk)."""
    apply_env(monkeypatch, INDEX_DIR=str(index_dir))


def row(name: str) -> Repository:
    with db.session_scope() as session:
        found = session.get(Repository, name)
        assert found is not None
        session.expunge(found)
        return found


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    source = tmp_path / "tree"
    shutil.copytree(SAMPLE_REPO, source)
    return source


def test_a_replica_behind_reindexes_and_one_up_to_date_does_nothing(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "replica-1", tmp_path / "replica-2"
    on_replica(monkeypatch, one)
    with bus.capture_published() as sent:
        accepted = repos.request_add(str(tree), name="tree")
    assert accepted.generation == 1
    assert [(e.type, e.data()) for e in sent] == [
        (EventType.REPO_INDEX_REQUESTED, RepoIndexRequested(repo="tree", generation=1, reason="add"))
    ]
    assert "tree" not in get_index().repositories()  # a request indexes nothing by itself

    replica_one = Reconciler()
    assert replica_one.run_once().indexed == ["tree"]
    assert local_generations(one) == {"tree": 1} and row("tree").indexed_generation == 1
    assert replica_one.run_once().indexed == []  # up to date: nothing to do

    # Another replica (its own disk) is behind the catalog: it indexes the repository itself.
    on_replica(monkeypatch, two)
    assert "tree" not in get_index().repositories()
    replica_two = Reconciler()
    assert replica_two.run_once().indexed == ["tree"]
    assert search("verify_twilio_signature", repos=["tree"]).hits[0].path == "webhooks/security.py"
    assert replica_two.run_once().indexed == []

    # A re-index request moves the generation on: each replica catches up once, incrementally.
    (tree / "queue.py").write_text("def drain_queue(items):\n    return list(items)\n")
    assert repos.request_reindex("tree").generation == 2
    assert replica_two.run_once().indexed == ["tree"]
    assert replica_two.run_once().indexed == []
    assert search("drain_queue", repos=["tree"]).hits[0].path == "queue.py"
    on_replica(monkeypatch, one)
    assert search("drain_queue", repos=["tree"]).hits == []  # replica one has not caught up yet
    assert replica_one.run_once().indexed == ["tree"]
    assert search("drain_queue", repos=["tree"]).hits[0].path == "queue.py"
    assert json.loads((one / STATE_FILE).read_text()) == {"tree": 2} and row("tree").indexed_generation == 2


def test_repositories_not_managed_through_the_api_are_left_alone(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_replica(monkeypatch, tmp_path / "replica")
    index_repository(tree, name="from_repos_setting")
    report = Reconciler().run_once()
    assert report.indexed == report.removed == []
    assert "from_repos_setting" in get_index().repositories()


def test_a_repository_gone_from_the_catalog_is_dropped_from_the_index(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_replica(monkeypatch, tmp_path / "replica")
    repos.request_add(str(tree), name="tree")
    replica = Reconciler()
    assert replica.run_once().indexed == ["tree"]
    with db.session_scope() as session:
        session.execute(delete(Repository).where(Repository.name == "tree"))
    assert replica.run_once().removed == ["tree"]
    assert "tree" not in get_index().repositories() and local_generations() == {}


def test_a_failed_run_is_recorded_retried_later_and_at_once_for_a_new_generation(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_replica(monkeypatch, tmp_path / "replica")
    repos.request_add(str(tree), name="tree")
    moved = tmp_path / "moved"
    tree.rename(moved)
    replica = Reconciler(retry_base=3600)
    assert replica.run_once().failed == ["tree"]
    assert row("tree").status == "failed" and "not a directory" in (row("tree").error or "")
    assert replica.run_once().waiting == ["tree"]  # not before its retry is due

    moved.rename(tree)
    repos.request_reindex("tree")
    assert row("tree").status == "pending"
    assert replica.run_once().indexed == ["tree"]
    assert row("tree").status == "ready"


def test_the_event_runs_a_pass_where_no_loop_runs(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_replica(monkeypatch, tmp_path / "replica")
    worker.shutdown()  # no loop in this process (as in a prefork child)
    accepted = repos.request_add(str(tree), name="tree")
    envelope = Envelope.new(RepoIndexRequested(repo="tree", generation=accepted.generation, reason="add"),
                            correlation_id="repo:tree:1")
    worker.HANDLERS[EventType.REPO_INDEX_REQUESTED](envelope)
    assert local_generations() == {"tree": 1}
    worker.HANDLERS[EventType.REPO_INDEX_REQUESTED](envelope)  # redelivered: nothing more to do
    assert local_generations() == {"tree": 1}


def test_the_event_wakes_the_loop_where_one_runs(
    database: str, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_replica(monkeypatch, tmp_path / "replica")
    apply_env(monkeypatch, INDEX_DIR=str(tmp_path / "replica"), REPO_RECONCILE_INTERVAL="3600")
    worker.startup()
    try:
        wait_until(lambda: reconciler.passes >= 1, 60, "the loop's first pass (nothing to do)")
        accepted = repos.request_add(str(tree), name="tree")
        envelope = Envelope.new(RepoIndexRequested(repo="tree", generation=accepted.generation, reason="add"),
                                correlation_id="repo:tree:1")
        worker.HANDLERS[EventType.REPO_INDEX_REQUESTED](envelope)
        wait_until(lambda: local_generations() == {"tree": 1}, 60, "the loop to index tree")
    finally:
        worker.shutdown()
    assert row("tree").indexed_generation == 1
