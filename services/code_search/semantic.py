"""Semantic search, when an embeddings endpoint is configured (``EMBEDDINGS_URL`` / ``EMBEDDINGS_API_KEY``).

Indexing: after each commit of the tantivy index, every indexed file whose chunks have no vectors at its
current content hash gets them (``sync``); only texts never embedded before are sent. A failing endpoint
never fails indexing: what is missing is reported and embedded on the next run.

Questions: the question's vector (cached; a failing endpoint is left alone for a while) against every
chunk's, as one more ranking in the engine's fusion. Without an endpoint nothing here runs.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from libs.common.settings import SearchSettings, get_settings
from services.code_search import vectors
from services.code_search.embeddings import EmbeddingConfig, EmbeddingError, embed
from services.code_search.pipeline import file_key
from services.code_search.vectors import ChunkRow, Neighbour, VectorStore

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

FILES_PER_STEP = 32  # files whose rows are written together (what a failure loses at most)
QUERY_COOLDOWN_SECONDS = 30.0  # after a failed question embedding, questions skip the endpoint this long

# One chunk of a file as the index holds it: (first line, qualified symbol, text).
ChunkText = tuple[int, str, str]
ChunksOf = Callable[[list[str]], dict[str, list[ChunkText]]]


def config() -> EmbeddingConfig | None:
    return EmbeddingConfig.from_settings(get_settings().search)


def store(directory: Path | None = None) -> VectorStore:
    return vectors.open_store(directory or get_settings().index_dir)


def embedding_input(path: str, symbol: str, text: str) -> str:
    """What is embedded for a chunk: where it is and what it defines say as much as its body."""
    return f"{path}: {symbol}\n{text}" if symbol else f"{path}\n{text}"


@dataclass
class SyncSummary:
    files: int = 0  # files (re-)embedded in this run
    chunks: int = 0  # chunks those files hold
    sent: int = 0  # texts sent to the endpoint (the rest had vectors already)
    removed: int = 0  # files whose vectors left
    pending: int = 0  # files still without vectors (the endpoint failed)
    error: str | None = None

    def describe(self) -> str:
        text = f"embeddings: {self.files} files, {self.chunks} chunks ({self.sent} sent)"
        if self.error:
            text += f"; {self.pending} files pending: {self.error}"
        return text


def sync(repo: str, indexed: dict[str, str], chunks_of: ChunksOf, directory: Path | None = None) -> SyncSummary | None:
    """Bring a repository's vectors in line with its indexed files (path -> content hash). ``chunks_of``
    reads the chunks of files (by file key) from the index. None when no endpoint is configured."""
    settings = get_settings().search
    cfg = config()
    if cfg is None:
        return None
    target = store(directory)
    summary = SyncSummary()
    have = target.embedded_files(repo)
    wanted = {file_key(repo, path): content_hash for path, content_hash in indexed.items()}
    gone = [key for key in have if key not in wanted]
    target.forget_files(gone)
    summary.removed = len(gone)
    todo = sorted(key for key, content_hash in wanted.items() if have.get(key) != (content_hash, cfg.label))
    # A few requests in flight: the endpoint's latency, not our CPU, is what a full index waits on.
    with ThreadPoolExecutor(max_workers=settings.embeddings_concurrency, thread_name_prefix="embed") as pool:
        for start in range(0, len(todo), FILES_PER_STEP):
            keys = todo[start : start + FILES_PER_STEP]
            try:
                written = _embed_files(target, cfg, repo, keys, wanted, chunks_of, settings, pool)
            except EmbeddingError as exc:
                summary.error = str(exc)
                summary.pending = len(todo) - start
                log.warning("semantic index of %s incomplete (%d files pending): %s", repo, summary.pending, exc)
                break
            summary.files += len(keys)
            summary.chunks += written[0]
            summary.sent += written[1]
    if gone or todo:
        target.collect_garbage()
    return summary


def _embed_files(
    target: VectorStore,
    cfg: EmbeddingConfig,
    repo: str,
    keys: list[str],
    wanted: dict[str, str],
    chunks_of: ChunksOf,
    settings: SearchSettings,
    pool: ThreadPoolExecutor,
) -> tuple[int, int]:
    texts = chunks_of(keys)
    rows: dict[str, tuple[str, str, list[ChunkRow]]] = {}
    inputs: dict[bytes, str] = {}
    for key in keys:
        path = key.partition("\x00")[2]
        chunk_rows = []
        for line, symbol, text in texts.get(key, []):
            value = embedding_input(path, symbol, text)
            d = vectors.digest(cfg.label, value)
            inputs.setdefault(d, value)
            chunk_rows.append(ChunkRow(key, line, d))
        rows[key] = (wanted[key], cfg.label, chunk_rows)
    known = target.known_digests(list(inputs))
    missing = [d for d in inputs if d not in known]
    batch, timeout = settings.embeddings_batch, settings.embeddings_timeout
    parts = [missing[start : start + batch] for start in range(0, len(missing), batch)]
    # Each request in the caller's trace context (a span per request, under the indexing run's).
    futures = [pool.submit(contextvars.copy_context().run, embed, cfg, [inputs[d] for d in part], timeout)
               for part in parts]
    try:
        for part, future in zip(parts, futures, strict=True):
            target.add_vectors(part, future.result())
    except BaseException:
        # The first failure ends the run: requests not yet sent are not sent.
        for future in futures:
            future.cancel()
        raise
    target.replace_files(repo, rows)
    return sum(len(r[2]) for r in rows.values()), len(missing)


def forget(repo: str, directory: Path | None = None) -> None:
    target_dir = directory or get_settings().index_dir
    if (Path(target_dir) / vectors.FILENAME).exists():
        store(target_dir).forget_repo(repo)


# -- questions --------------------------------------------------------------------------------------

_cooldown_lock = threading.Lock()
_cooldown_until = 0.0


@lru_cache(maxsize=512)
def _question_vector(cfg: EmbeddingConfig, text: str, timeout: float) -> np.ndarray:
    vector = embed(cfg, [text], timeout)[0]
    vector.setflags(write=False)  # shared by every search that asks the same question
    return vector


def question_vector(text: str) -> tuple[EmbeddingConfig, np.ndarray] | None:
    """The question's unit vector, or None: no endpoint, nothing to embed, or the endpoint failing (the
    question is then answered by the other rankings; a failure keeps questions off it for a while)."""
    global _cooldown_until
    cfg = config()
    if cfg is None or not text.strip():
        return None
    if time.monotonic() < _cooldown_until:
        return None
    try:
        return cfg, _question_vector(cfg, text.strip(), get_settings().search.embeddings_query_timeout)
    except EmbeddingError as exc:
        with _cooldown_lock:
            _cooldown_until = time.monotonic() + QUERY_COOLDOWN_SECONDS
        log.warning("question answered without semantic search for %.0fs: %s", QUERY_COOLDOWN_SECONDS, exc)
        return None


def reset_cooldown() -> None:
    global _cooldown_until
    _cooldown_until = 0.0
    _question_vector.cache_clear()


def nearest(cfg: EmbeddingConfig, vector: np.ndarray, repos: list[str] | None, k: int,
            directory: Path | None = None) -> list[Neighbour]:
    return store(directory).nearest(cfg.label, vector, repos, k)
