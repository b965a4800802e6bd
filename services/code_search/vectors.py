"""Chunk vectors beside the tantivy index: an SQLite file in the same directory.

- ``vectors``: one row per distinct embedded text (digest of the model label and the text): a chunk whose
  text did not change is never embedded again, whichever file or run it comes back in;
- ``chunks``: which vector each indexed chunk has (file key and first line: the chunk's identity in the index);
- ``files``: the content hash each file's chunks were embedded at, so a file changed, added or missed
  by an earlier run (endpoint down) is embedded on the next one and nothing else is.

Searches read the whole table into one float32 matrix, once per change (``version``), and rank by a
dot product: unit vectors, so it is the cosine. WAL: readers never wait for the indexer.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where vectors are handled: a code_search worker without embeddings never loads it.

FILENAME = "vectors-v1.sqlite"
_PARAMS = 500  # bound parameters per statement (SQLite's limit is 999 on old builds)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (file_key TEXT PRIMARY KEY, repo TEXT NOT NULL, hash TEXT NOT NULL,
                                  label TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_repo ON files(repo);
CREATE TABLE IF NOT EXISTS chunks (file_key TEXT NOT NULL, line INTEGER NOT NULL, digest BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_key);
CREATE TABLE IF NOT EXISTS vectors (digest BLOB PRIMARY KEY, vec BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def digest(label: str, text: str) -> bytes:
    return hashlib.blake2b(f"{label}\x00{text}".encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class ChunkRow:
    file_key: str
    line: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Neighbour:
    file_key: str
    line: int
    score: float  # cosine similarity with the question


class _Matrix:
    def __init__(self, keys: list[str], lines: np.ndarray, repos: np.ndarray, names: list[str],
                 matrix: np.ndarray) -> None:
        self.keys = keys
        self.lines = lines
        self.repos = repos  # index into names, per row
        self.names = names
        self.matrix = matrix


def _chunks(values: Sequence[object]) -> Iterable[Sequence[object]]:
    for start in range(0, len(values), _PARAMS):
        yield values[start : start + _PARAMS]


class VectorStore:
    """One per process and index directory (``open_store``); safe to share between threads."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILENAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._loaded: tuple[int, str, _Matrix] | None = None

    # -- writing (the indexer, under its run lock) ------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking SQLite's write lock at once (a second writer waits, never fails late)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db

    def embedded_files(self, repo: str) -> dict[str, tuple[str, str]]:
        """file key -> (content hash, model label) of the repository's embedded files."""
        with self._lock:
            rows = self._db.execute("SELECT file_key, hash, label FROM files WHERE repo = ?", (repo,)).fetchall()
        return {key: (hash_, label) for key, hash_, label in rows}

    def known_digests(self, digests: Sequence[bytes]) -> set[bytes]:
        found: set[bytes] = set()
        with self._lock:
            for part in _chunks(digests):
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT digest FROM vectors WHERE digest IN ({marks})", part)
                found.update(row[0] for row in rows)
        return found

    def add_vectors(self, digests: Sequence[bytes], matrix: np.ndarray) -> None:
        import numpy as np

        rows = [(d, np.ascontiguousarray(matrix[i], dtype=np.float32).tobytes()) for i, d in enumerate(digests)]
        with self._transaction() as db:
            db.executemany("INSERT OR IGNORE INTO vectors (digest, vec) VALUES (?, ?)", rows)

    def replace_files(self, repo: str, files: dict[str, tuple[str, str, list[ChunkRow]]]) -> None:
        """Each file key -> (content hash, label, its chunks): the file's rows, all at once."""
        keys = list(files)
        with self._transaction() as db:
            self._delete(keys)
            db.executemany(
                "INSERT INTO files (file_key, repo, hash, label) VALUES (?, ?, ?, ?)",
                [(key, repo, hash_, label) for key, (hash_, label, _rows) in files.items()],
            )
            db.executemany(
                "INSERT INTO chunks (file_key, line, digest) VALUES (?, ?, ?)",
                [(r.file_key, r.line, r.digest) for _h, _l, rows in files.values() for r in rows],
            )
            self._bump()

    def forget_files(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._transaction():
            self._delete(keys)
            self._bump()

    def forget_repo(self, repo: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM chunks WHERE file_key IN (SELECT file_key FROM files WHERE repo = ?)", (repo,))
            db.execute("DELETE FROM files WHERE repo = ?", (repo,))
            self._bump()
        self.collect_garbage()

    def collect_garbage(self) -> int:
        """Drop the vectors no chunk uses any more (changed and deleted text); returns how many."""
        with self._transaction() as db:
            return db.execute("DELETE FROM vectors WHERE digest NOT IN (SELECT digest FROM chunks)").rowcount

    def counts(self) -> tuple[int, int]:
        """(chunks with a vector, distinct vectors stored)."""
        with self._lock:
            chunks = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            vectors = self._db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        return int(chunks), int(vectors)

    def _delete(self, keys: Sequence[str]) -> None:
        for part in _chunks(keys):
            marks = ",".join("?" * len(part))
            self._db.execute(f"DELETE FROM chunks WHERE file_key IN ({marks})", part)
            self._db.execute(f"DELETE FROM files WHERE file_key IN ({marks})", part)

    def _bump(self) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('version', 1) "
            "ON CONFLICT(key) DO UPDATE SET value = value + 1"
        )

    # -- reading (searches) -----------------------------------------------------------------------

    def _version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        return int(row[0]) if row else 0

    def _matrix(self, label: str) -> _Matrix | None:
        import numpy as np

        with self._lock:
            version = self._version()
            loaded = self._loaded
            if loaded is not None and loaded[0] == version and loaded[1] == label:
                return loaded[2]
            rows = self._db.execute(
                "SELECT c.file_key, c.line, f.repo, v.vec FROM chunks c "
                "JOIN files f ON f.file_key = c.file_key JOIN vectors v ON v.digest = c.digest "
                "WHERE f.label = ? ORDER BY c.file_key, c.line",
                (label,),
            ).fetchall()
            matrix = None
            if rows:
                width = len(rows[0][3])
                usable = [row for row in rows if len(row[3]) == width]
                names = sorted({row[2] for row in usable})
                number = {name: i for i, name in enumerate(names)}
                matrix = _Matrix(
                    keys=[row[0] for row in usable],
                    lines=np.fromiter((row[1] for row in usable), dtype=np.int64, count=len(usable)),
                    repos=np.fromiter((number[row[2]] for row in usable), dtype=np.int32, count=len(usable)),
                    names=names,
                    matrix=np.frombuffer(b"".join(row[3] for row in usable), dtype=np.float32).reshape(
                        len(usable), width // 4
                    ),
                )
            self._loaded = (version, label, matrix) if matrix is not None else None
            return matrix

    def nearest(self, label: str, vector: np.ndarray, repos: Sequence[str] | None, k: int) -> list[Neighbour]:
        """The ``k`` chunks closest to ``vector`` among ``repos`` (every repository when None)."""
        import numpy as np

        loaded = self._matrix(label)
        if loaded is None or k <= 0 or loaded.matrix.shape[1] != vector.shape[0]:
            return []
        scores = loaded.matrix @ vector
        if repos is not None:
            wanted = set(repos)
            allowed = [i for i, name in enumerate(loaded.names) if name in wanted]
            scores = np.where(np.isin(loaded.repos, allowed), scores, -np.inf)
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [
            Neighbour(loaded.keys[i], int(loaded.lines[i]), float(scores[i]))
            for i in top
            if np.isfinite(scores[i])
        ]

_stores_lock = threading.Lock()
_stores: dict[Path, VectorStore] = {}


def open_store(directory: Path) -> VectorStore:
    """This process's store for an index directory (created empty on first use)."""
    # Every question asks: the directory as given first (resolving it stats every path component).
    store = _stores.get(directory)
    if store is not None:
        return store
    key = directory.resolve()
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            key.mkdir(parents=True, exist_ok=True)
            store = _stores[key] = VectorStore(key)
        _stores[directory] = store
        return store
