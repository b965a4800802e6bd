"""Parsing files in worker processes (tree-sitter is the bulk of indexing time).

Workers are plain child processes (``python -m services.code_search.parallel``) fed batches
over a pipe: unlike multiprocessing they never re-run the parent's main module, never fork a
process that runs other threads (Celery, tantivy), and work under any worker pool. A worker that
dies (a grammar crash on a strange file) costs only its batch, which is then parsed here.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from services.code_search.pipeline import FileResult, process_file
from services.code_search.walker import Candidate

log = logging.getLogger(__name__)

Job = tuple[Candidate, str]  # a file and the content hash the index holds for it ("" when new)
_HEADER = struct.Struct("!I")
_DONE = object()


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("worker closed its pipe")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("worker closed its pipe mid-message")
    return pickle.loads(data)


def process_batch(repo: str, jobs: list[Job]) -> list[FileResult]:
    return [process_file(repo, candidate, known) for candidate, known in jobs]


def _start_worker() -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-m", "services.code_search.parallel"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
    )


def run(repo: str, batches: list[list[Job]], workers: int) -> Iterator[list[FileResult]]:
    """Results batch by batch, in completion order; every batch comes back exactly once."""
    pending: queue.SimpleQueue[list[Job]] = queue.SimpleQueue()
    for batch in batches:
        pending.put(batch)
    results: queue.SimpleQueue[Any] = queue.SimpleQueue()
    failed: list[list[Job]] = []
    processes: list[subprocess.Popen[bytes]] = []

    def feed(process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        try:
            while True:
                try:
                    batch = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    _send(process.stdin, (repo, batch))
                    results.put(_receive(process.stdout))
                except (OSError, ValueError, EOFError, pickle.PickleError):
                    log.warning("an indexing worker died; parsing its batch in the indexer instead")
                    failed.append(batch)
                    return
        finally:
            results.put(_DONE)

    threads = []
    try:
        for _ in range(workers):
            try:
                process = _start_worker()
            except OSError:
                log.warning("could not start an indexing worker", exc_info=True)
                break
            processes.append(process)
            thread = threading.Thread(target=feed, args=(process,), name="index-feeder", daemon=True)
            thread.start()
            threads.append(thread)
        running = len(threads)
        while running:
            item = results.get()
            if item is _DONE:
                running -= 1
                continue
            yield item
        leftovers = list(failed)
        while True:
            try:
                leftovers.append(pending.get_nowait())
            except queue.Empty:
                break
        for batch in leftovers:
            yield process_batch(repo, batch)
    finally:
        for process in processes:
            try:
                if process.stdin is not None:
                    process.stdin.close()
            except OSError:
                pass
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in threads:
            thread.join(timeout=5)


def _serve() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Anything printed by accident must not corrupt the protocol.
    sys.stdout = sys.stderr
    while True:
        try:
            repo, jobs = _receive(stdin)
        except EOFError:
            return
        _send(stdout, process_batch(repo, jobs))


if __name__ == "__main__":
    _serve()
