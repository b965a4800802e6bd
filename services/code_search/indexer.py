"""Indexing a repository's working tree, incrementally.

A file whose size and mtime match the index's manifest is not opened. A file whose content hash
matches is not parsed again. Deleted (or newly ignored) files leave the index. Parsing runs in
worker processes when there is enough of it; the local index is committed first, then the
database catalog, so a crash in between only means the next run redoes some work.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.settings import get_settings
from services.code_search import catalog, parallel, semantic
from services.code_search.index import CodeIndex, FileEntry, Writer, get_index
from services.code_search.pipeline import FileResult, file_key
from services.code_search.walker import Candidate, walk

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Below this much work, starting worker processes costs more than it saves.
PARALLEL_MIN_FILES = 150
PARALLEL_MIN_BYTES = 3_000_000
BATCH_FILES = 24
MAX_WORKERS = 4

_run_lock = threading.Lock()


@dataclass
class IndexSummary:
    repo: str
    root: str
    files: int  # files in the index for this repository after the run
    symbols: int
    chunks: int
    skipped: dict[str, int]  # reason -> count (a pruned directory counts once)
    seconds: float
    indexed: int = 0  # files parsed in this run (new or changed)
    unchanged: int = 0  # files left as they were (not parsed; not even read when size and mtime matched)
    removed: int = 0  # files that left the index (deleted, or now ignored or skipped)
    read: int = 0  # files whose content was read in this run
    commit: str | None = None
    languages: dict[str, int] = field(default_factory=dict)  # language -> indexed files
    embeddings: semantic.SyncSummary | None = None  # None: no embeddings endpoint configured

    def describe(self) -> str:
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"
        embedded = f"; {self.embeddings.describe()}" if self.embeddings is not None else ""
        return (
            f"{self.repo}: {self.files} files, {self.symbols} symbols, {self.chunks} chunks "
            f"({self.indexed} indexed, {self.unchanged} unchanged, {self.removed} removed); "
            f"skipped: {skipped}{embedded}; {self.seconds:.2f}s"
        )


def validate_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid repository name {name!r}: use letters, digits, '.', '_' or '-' (at most 100 characters)"
        )
    return name


def _workers(jobs: list[tuple[Candidate, str]]) -> int:
    cpus = os.cpu_count() or 1
    if cpus < 2 or (len(jobs) < PARALLEL_MIN_FILES and sum(c.size for c, _ in jobs) < PARALLEL_MIN_BYTES):
        return 0
    return min(cpus, MAX_WORKERS)


def _results(repo: str, jobs: list[tuple[Candidate, str]], progress: Progress | None) -> Iterator[FileResult]:
    total = len(jobs)
    done = 0
    if progress:
        progress(0, total)
    batches = [jobs[i : i + BATCH_FILES] for i in range(0, total, BATCH_FILES)]
    workers = _workers(jobs)
    outputs: Iterable[list[FileResult]] = (
        parallel.run(repo, batches, workers) if workers else (parallel.process_batch(repo, b) for b in batches)
    )
    for batch in outputs:
        yield from batch
        done += len(batch)
        if progress:
            progress(done, total)


def _record(entry: FileEntry) -> FileResult:
    return FileResult(
        path=entry.path, size=entry.size, mtime_ns=entry.mtime_ns, hash=entry.hash, language=entry.language,
        skip=entry.skip, lines=entry.lines, symbols=entry.symbols, chunks=entry.chunks, complete=entry.complete,
    )


def _db_row(result: FileResult) -> dict[str, Any]:
    return {
        "path": result.path,
        "content_hash": result.hash,
        "language": result.language or None,
        "size_bytes": result.size,
        "line_count": result.lines,
        "symbol_count": result.symbols,
        "chunk_count": result.chunks,
        "mtime_ns": result.mtime_ns,
    }


def _repo_doc(name: str, root: Path, git: catalog.GitInfo) -> dict[str, Any]:
    return {
        "doc_type": "repo",
        "file_key": file_key(name, ""),
        "repo": name,
        "root": str(root),
        "commit": git.commit or "",
        "url": git.url or "",
        "branch": git.branch or "",
    }


def _write(
    index: CodeIndex,
    writer: Writer,
    name: str,
    results: Iterator[FileResult],
    manifest: dict[str, FileEntry],
    final: dict[str, FileResult],
    counts: Counter[str],
) -> list[FileResult]:
    """Apply every processed file to the index; returns those whose database row must change."""
    changed = []
    for result in results:
        counts["read"] += 1
        previous = manifest.get(result.path)
        if result.unchanged and previous is not None:
            # Same bytes, new mtime: only the manifest record moves.
            kept = _record(previous)
            kept.mtime_ns = result.mtime_ns
            writer.delete_file_record(name, result.path, index.schema)
            writer.add(kept.file_record(name))
            final[result.path] = kept
            if not kept.skip:
                counts["unchanged"] += 1
                changed.append(kept)
            continue
        writer.delete_file(name, result.path)
        for doc in result.docs:
            writer.add_json(doc)
        writer.add(result.file_record(name))
        final[result.path] = result
        result.docs = []
        if not result.skip:
            counts["indexed"] += 1
            changed.append(result)
    return changed


def index_repository(path: str | Path, name: str | None = None, progress: Progress | None = None) -> IndexSummary:
    """Index (or re-index, incrementally) the working tree at ``path`` as repository ``name``
    (default: the directory's name). ``progress(done, total)`` follows the files being read."""
    started = time.perf_counter()
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"not a directory: {root}")
    name = validate_name(name or root.name)
    git = catalog.git_info(root)
    catalog.mark_indexing(name, root, git)
    try:
        with _run_lock:
            summary = _index(name, root, git, progress)
    except BaseException as exc:
        try:
            catalog.mark_failed(name, f"{type(exc).__name__}: {exc}")
        except Exception:
            log.exception("could not record the failed indexing of %s", name)
        raise
    summary.seconds = round(time.perf_counter() - started, 3)
    log.info("indexed %s", summary.describe())
    return summary


def _index(name: str, root: Path, git: catalog.GitInfo, progress: Progress | None) -> IndexSummary:
    settings = get_settings()
    index = get_index()
    manifest = index.manifest(name)
    walked = walk(root, settings.search.max_file_bytes)

    final: dict[str, FileResult] = {}
    jobs: list[tuple[Candidate, str]] = []
    seen = set()
    for candidate in walked.files:
        seen.add(candidate.rel)
        entry = manifest.get(candidate.rel)
        if entry is not None and entry.mtime_ns == candidate.mtime_ns and entry.size == candidate.size:
            final[candidate.rel] = _record(entry)
        else:
            jobs.append((candidate, entry.hash if entry is not None else ""))
    removed = [path for path in manifest if path not in seen]

    repo_doc = _repo_doc(name, root, git)
    known = index.repositories().get(name)
    repo_changed = known is None or (known.root, known.commit, known.url, known.branch) != (
        repo_doc["root"], repo_doc["commit"], repo_doc["url"], repo_doc["branch"],
    )
    counts: Counter[str] = Counter(unchanged=sum(1 for r in final.values() if not r.skip))
    changed: list[FileResult] = []
    if jobs or removed or repo_changed:
        with index.writer() as writer:
            for path in removed:
                writer.delete_file(name, path)
            changed = _write(index, writer, name, _results(name, jobs, progress), manifest, final, counts)
            writer.delete_repo_record(name, index.schema)
            writer.add(repo_doc)
            writer.commit()

    indexed = [r for r in final.values() if not r.skip]
    skipped = Counter(walked.skipped)
    skipped.update(r.skip for r in final.values() if r.skip)
    languages = Counter(r.language or "text" for r in indexed)
    summary = IndexSummary(
        repo=name,
        root=str(root),
        files=len(indexed),
        symbols=sum(r.symbols for r in indexed),
        chunks=sum(r.chunks for r in indexed),
        skipped=dict(sorted(skipped.items())),
        seconds=0.0,
        indexed=counts["indexed"],
        unchanged=counts["unchanged"],
        removed=len(removed),
        read=counts["read"],
        commit=git.commit,
        languages=dict(languages.most_common()),
    )

    # The catalog: rows for what changed; all rows when the database does not match the index
    # (a fresh database, or another replica's run): the local index is what this replica serves.
    gone = [p for p in removed if not manifest[p].skip]
    gone += [r.path for r in final.values() if r.skip and r.path in manifest and not manifest[r.path].skip]
    previously_indexed = sum(1 for entry in manifest.values() if not entry.skip)
    rows = changed
    if catalog.file_count(name) != previously_indexed:
        rows, gone = indexed, []
        catalog.forget_files(name)
    catalog.record_files(
        name,
        [_db_row(r) for r in rows],
        gone,
        files=summary.files,
        symbols=summary.symbols,
        chunks=summary.chunks,
        skipped=summary.skipped,
    )
    # Vectors last: the lexical index is usable whatever the embeddings endpoint does.
    summary.embeddings = semantic.sync(name, {r.path: r.hash for r in indexed}, index.chunk_texts)
    return summary


def remove_repository(name: str) -> bool:
    """Drop a repository from the index and the catalog; False when it was not indexed here."""
    index = get_index()
    present = name in index.repositories() or bool(index.manifest(name))
    if present:
        with _run_lock, index.writer() as writer:
            writer.delete_repo(name)
            writer.commit()
    semantic.forget(name)
    catalog.forget(name)
    return present
