"""Each code_search replica converges its own index to the catalog's desired state.

The catalog (database) says, per repository, what to index and its generation (bumped by every add,
re-index request and matching git push). A replica keeps, beside its index on its own disk, the
generation it last finished of each repository (``generations.json``). A pass indexes — incrementally,
as the engine always does — every repository the local index lags behind, and drops those the
catalog no longer has. Passes run at start, on ``repo.index_requested`` (which reaches one replica
of the queue) and every ``REPO_RECONCILE_INTERVAL`` seconds (which is what brings every other replica
along). Repositories not managed through the API (REPOS, `repotalk index`) are left alone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from libs.common.settings import get_settings
from services.code_search import catalog, repos
from services.code_search.index import get_index

log = logging.getLogger(__name__)

STATE_FILE = "generations.json"
LOCK_FILE = ".reconcile.lock"
# A run that failed is tried again after this, doubling up to RETRY_MAX, until the generation moves on.
RETRY_BASE = 30.0
RETRY_MAX = 900.0


def _state_path(index_dir: Path) -> Path:
    return index_dir / STATE_FILE


def local_generations(index_dir: Path | None = None) -> dict[str, int]:
    """The generation this replica last finished of each managed repository (empty when none or unreadable)."""
    path = _state_path(index_dir or get_settings().index_dir)
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("unreadable %s (%s): every managed repository is re-checked", path, type(exc).__name__)
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}


def _save(index_dir: Path, generations: dict[str, int]) -> None:
    # Written beside the index and renamed into place: a crash leaves the old file or the new one.
    index_dir.mkdir(parents=True, exist_ok=True)
    path = _state_path(index_dir)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(dict(sorted(generations.items()))), "utf-8")
    os.replace(staging, path)


@contextmanager
def _exclusive(index_dir: Path) -> Iterator[None]:
    """One pass at a time per index directory, across the processes of a replica (a prefork pool)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class PassReport:
    indexed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # failed before, not yet due for another try


@dataclass
class _Failure:
    generation: int
    attempts: int
    retry_at: float


class Reconciler:
    """A replica's convergence loop; ``run_once`` is one pass, ``start`` runs passes in a thread."""

    def __init__(self, interval: float | None = None, retry_base: float = RETRY_BASE) -> None:
        self.interval = interval
        self.retry_base = retry_base
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, _Failure] = {}
        self.passes = 0  # passes the loop completed (or gave up on)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # -- one pass ---------------------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        index_dir = get_settings().index_dir
        with self._lock, _exclusive(index_dir):
            return self._pass(index_dir)

    def _pass(self, index_dir: Path) -> PassReport:
        report = PassReport()
        wanted = catalog.repositories()
        done = local_generations(index_dir)
        present = set(get_index().repositories())
        for name in sorted(done):
            if name not in wanted:
                self._remove(name, index_dir, done)
                report.removed.append(name)
        for name, entry in sorted(wanted.items()):
            if entry.source is None or entry.generation <= 0:
                continue  # not managed through the API: REPOS or `repotalk index` keep it
            have = done.get(name, 0) if name in present else 0
            if have >= entry.generation:
                continue
            failure = self._failures.get(name)
            if failure is not None and failure.generation == entry.generation and time.monotonic() < failure.retry_at:
                report.waiting.append(name)
                continue
            if self._index(entry):
                done[name] = entry.generation
                _save(index_dir, done)
                catalog.mark_generation(name, entry.generation)
                report.indexed.append(name)
            else:
                report.failed.append(name)
        return report

    def _index(self, entry: catalog.Desired) -> bool:
        assert entry.source is not None
        try:
            summary = repos.add_repository(entry.source, name=entry.name, branch=entry.branch, replace=True)
        except Exception as exc:
            reason = exc.message if isinstance(exc, repos.RepoError) else f"{type(exc).__name__}: {exc}"
            previous = self._failures.get(entry.name)
            attempts = previous.attempts + 1 if previous and previous.generation == entry.generation else 1
            delay = min(RETRY_MAX, self.retry_base * 2 ** (attempts - 1))
            self._failures[entry.name] = _Failure(entry.generation, attempts, time.monotonic() + delay)
            log.warning("indexing %s (generation %d) failed, next try in %.0f s: %s",
                        entry.name, entry.generation, delay, catalog.redact_url(reason))
            try:
                catalog.mark_failed(entry.name, catalog.redact_url(reason))
            except Exception:
                log.exception("could not record the failure of %s", entry.name)
            return False
        self._failures.pop(entry.name, None)
        log.info("converged %s to generation %d: %s", entry.name, entry.generation, summary.describe())
        return True

    def _remove(self, name: str, index_dir: Path, done: dict[str, int]) -> None:
        # The index only: the catalog row is already gone (and may come back at any moment with a new add).
        index = get_index()
        if name in index.repositories() or index.manifest(name):
            with index.writer() as writer:
                writer.delete_repo(name)
                writer.commit()
        shutil.rmtree(repos.checkouts_dir() / name, ignore_errors=True)
        done.pop(name, None)
        _save(index_dir, done)
        log.info("removed %s: the catalog no longer has it", name)

    # -- the loop ---------------------------------------------------------------------------------------

    def wake(self) -> bool:
        """Ask for a pass now; False when no loop runs in this process (the caller may run one itself)."""
        if self._thread is None or not self._thread.is_alive():
            return False
        self._wake.set()
        return True

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._wake.set()  # the first pass at once: a new replica catches up with the catalog
        self._thread = threading.Thread(target=self._loop, name="code-search-reconcile", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval or get_settings().search.reconcile_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                report = self.run_once()
            except Exception as exc:
                # The database or the disk may be briefly away: the next pass tries again.
                log.warning("reconcile pass failed: %s: %s", type(exc).__name__, exc)
                continue
            finally:
                self.passes += 1
            if report.indexed or report.failed or report.removed:
                log.info("reconcile: indexed %s, failed %s, removed %s",
                         report.indexed, report.failed, report.removed)


reconciler = Reconciler()
# A prefork pool forks after startup(): the child has no loop, and a lock the parent's loop held at that
# moment would stay held in the child forever.
os.register_at_fork(after_in_child=reconciler.after_fork)
