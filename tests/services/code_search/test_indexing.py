"""Indexing: summary, skip reasons, incremental re-index, several repositories, the catalog, and a
reader that sees another process's re-index."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from libs.common.db import session_scope
from libs.common.models.code_index import IndexedFile, Repository
from services.code_search import indexer, parallel
from services.code_search.catalog import git_info, redact_url
from services.code_search.engine import index_repository, search
from services.code_search.index import IndexBusy, get_index

ROOT = Path(__file__).resolve().parents[3]


def locations(query: str, **kwargs: object) -> list[str]:
    result = search(query, **kwargs)  # type: ignore[arg-type]
    assert result.error is None, result.error
    return [f"{h.path}:{h.line}" for h in result.hits]


def doc_count() -> int:
    return get_index().searcher().num_docs


def db_files(repo: str) -> dict[str, IndexedFile]:
    with session_scope() as session:
        rows = session.scalars(select(IndexedFile).where(IndexedFile.repo == repo)).all()
        return {row.path: row for row in rows}


def test_summary_counts_files_symbols_chunks_and_skips(database: str, sample_repo: Path) -> None:
    summary = index_repository(sample_repo)
    assert summary.repo == "sample_repo" and summary.root == str(sample_repo)
    assert summary.files == 23 and summary.indexed == 23 and summary.read == 24
    assert summary.symbols == 76 and summary.chunks >= summary.symbols
    assert summary.skipped == {
        "binary": 1,
        "gitignored": 3,
        "minified": 2,  # app.min.js by name, bundle.js by content
        "oversized": 1,
        "sensitive": 1,
        "vendored": 1,
    }
    assert summary.languages["python"] == 5 and summary.languages["go"] == 2
    assert "23 files" in summary.describe() and "oversized 1" in summary.describe()

    with session_scope() as session:
        repo = session.get(Repository, "sample_repo")
        assert repo is not None
        assert (repo.status, repo.file_count, repo.symbol_count, repo.chunk_count) == (
            "ready", 23, 76, summary.chunks,
        )
        assert repo.skipped == summary.skipped and repo.indexed_at is not None
    rows = db_files("sample_repo")
    assert len(rows) == 23
    security = rows["webhooks/security.py"]
    assert (security.language, security.symbol_count, security.line_count) == ("python", 4, 37)
    assert len(security.content_hash) == 40 and security.mtime_ns


def test_reindexing_an_unchanged_tree_reads_nothing_and_does_not_grow(database: str, sample_repo: Path) -> None:
    first = index_repository(sample_repo)
    docs = doc_count()
    index_files = sorted(os.listdir(get_index().directory))
    again = index_repository(sample_repo)
    assert (again.read, again.indexed, again.removed, again.unchanged) == (0, 0, 0, 23)
    assert (again.files, again.symbols, again.chunks, again.skipped) == (
        first.files, first.symbols, first.chunks, first.skipped,
    )
    assert doc_count() == docs
    assert sorted(os.listdir(get_index().directory)) == index_files  # not even a commit
    assert len(db_files("sample_repo")) == 23


def test_a_changed_file_is_reindexed_and_a_deleted_one_disappears(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    docs = doc_count()
    security = sample_repo / "webhooks" / "security.py"
    security.write_text(
        security.read_text().replace("def verify_twilio_signature(", "def check_provider_signature(")
    )
    (sample_repo / "server" / "ratelimit.go").unlink()

    summary = index_repository(sample_repo)
    assert (summary.read, summary.indexed, summary.removed) == (1, 1, 1)
    assert summary.files == 22
    assert locations("check_provider_signature")[0] == "webhooks/security.py:22"
    hits = search("verify_twilio_signature").hits
    assert all(h.symbol != "verify_twilio_signature" for h in hits)
    assert not any(h.path == "server/ratelimit.go" for h in search("NewRateLimiter allow sender").hits)
    assert "server/ratelimit.go" not in db_files("sample_repo")
    assert db_files("sample_repo")["webhooks/security.py"].symbol_count == 4
    # The removed file's documents went, the changed file's were replaced one for one.
    assert doc_count() < docs

    again = index_repository(sample_repo)
    assert (again.read, again.indexed) == (0, 0)
    assert doc_count() == get_index().searcher().num_docs


def test_a_touched_but_identical_file_is_read_not_reparsed(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    docs = doc_count()
    store = sample_repo / "sessions" / "store.py"
    later = time.time_ns() + 5_000_000_000
    os.utime(store, ns=(later, later))
    summary = index_repository(sample_repo)
    assert (summary.read, summary.indexed, summary.unchanged) == (1, 0, 23)
    assert doc_count() == docs
    assert db_files("sample_repo")["sessions/store.py"].mtime_ns == later
    assert index_repository(sample_repo).read == 0


def test_newly_ignored_and_newly_binary_files_leave_the_index(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    with (sample_repo / ".gitignore").open("a") as handle:
        handle.write("scripts/\n")
    (sample_repo / "README.md").write_bytes(b"\x00\x01binary now")
    summary = index_repository(sample_repo)
    assert summary.skipped["gitignored"] == 4 and summary.skipped["binary"] == 2
    assert summary.files == 21
    assert "scripts/deploy.rb" not in db_files("sample_repo") and "README.md" not in db_files("sample_repo")
    assert not [h for h in search("Deployer deploy release hosts").hits if h.path.startswith("scripts/")]


def test_several_repositories_live_in_one_index(database: str, sample_repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "billing"
    other.mkdir()
    (other / "invoices.py").write_text('def send_invoice(customer):\n    """Email the invoice."""\n')
    index_repository(sample_repo)
    index_repository(other)
    assert set(get_index().repositories()) == {"sample_repo", "billing"}
    first = search("send_invoice").hits[0]
    assert (first.repo, first.path, first.line) == ("billing", "invoices.py", 1)
    # Re-indexing one leaves the other alone.
    (sample_repo / "README.md").write_text("# Relay\n\nNow with invoices.\n")
    assert index_repository(sample_repo).indexed == 1
    assert locations("send_invoice", repos=["billing"]) == ["invoices.py:1"]


def test_the_database_catalog_is_rebuilt_when_it_lost_track(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    with session_scope() as session:
        session.execute(delete(IndexedFile))
    summary = index_repository(sample_repo)
    assert summary.read == 0
    assert len(db_files("sample_repo")) == 23


def test_parsing_in_worker_processes_gives_the_same_index(
    database: str, sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(indexer, "BATCH_FILES", 3)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    seen: list[tuple[int, int]] = []
    summary = index_repository(sample_repo, progress=lambda done, total: seen.append((done, total)))
    assert (summary.files, summary.symbols) == (23, 76)
    assert seen[0] == (0, 24) and seen[-1] == (24, 24)
    assert locations("where is the webhook signature verified?")[0] == "webhooks/security.py:22"


def test_a_reader_sees_a_reindex_committed_by_another_process(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    assert all(h.symbol != "issue_refund" for h in search("issue_refund").hits)
    (sample_repo / "refunds.py").write_text('def issue_refund(order):\n    """Give the money back."""\n')
    code = "from services.code_search.engine import index_repository; import sys; index_repository(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(sample_repo)], check=True, cwd=ROOT, env=dict(os.environ))
    hit = search("issue_refund").hits[0]
    assert (hit.path, hit.symbol) == ("refunds.py", "issue_refund")


def test_git_checkouts_record_commit_branch_and_a_credential_free_remote(tmp_path: Path) -> None:
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs with: peeled\n" + "a" * 40 + " refs/heads/main\n")
    (git / "config").write_text(
        '[core]\n\tbare = false\n[remote "origin"]\n\turl = https://bot:s3cret@github.com/acme/relay.git\n'
    )
    info = git_info(tmp_path)
    assert (info.commit, info.branch, info.url) == ("a" * 40, "main", "https://github.com/acme/relay.git")
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert git_info(tmp_path).commit == "b" * 40
    assert redact_url("git@github.com:acme/relay.git") == "git@github.com:acme/relay.git"
    assert git_info(tmp_path / "nowhere").commit is None


def test_names_and_paths_are_validated(database: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        index_repository(tmp_path / "missing")
    with pytest.raises(ValueError, match="invalid repository name"):
        index_repository(tmp_path, name="../etc")


def test_one_writer_at_a_time_and_a_failed_write_changes_nothing(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    index = get_index()
    docs = doc_count()
    # Another process (or thread) holding the writer: a second one waits, then gives up clearly.
    with index.writer(), pytest.raises(IndexBusy), index.writer(wait_seconds=0):
        pass
    with pytest.raises(RuntimeError, match="boom"), index.writer() as writer:
        writer.delete_repo("sample_repo")
        raise RuntimeError("boom")
    assert doc_count() == docs
    assert index_repository(sample_repo).read == 0  # the lock was released both times


def test_a_failed_run_is_recorded_and_leaves_the_index_as_it_was(
    database: str, sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_repository(sample_repo)
    docs = doc_count()
    (sample_repo / "webhooks" / "security.py").write_text("def replaced():\n    pass\n")

    def explode(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    original = parallel.process_file
    monkeypatch.setattr(parallel, "process_file", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        index_repository(sample_repo)
    with session_scope() as session:
        repo = session.get(Repository, "sample_repo")
        assert repo is not None and repo.status == "failed" and repo.error == "RuntimeError: disk on fire"
    assert doc_count() == docs
    assert search("verify_twilio_signature").hits[0].path == "webhooks/security.py"

    monkeypatch.setattr(parallel, "process_file", original)
    assert index_repository(sample_repo).indexed == 1
    with session_scope() as session:
        repo = session.get(Repository, "sample_repo")
        assert repo is not None and (repo.status, repo.error) == ("ready", None)
