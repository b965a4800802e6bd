"""The search index on this replica's local disk: a tantivy index under ``settings.index_dir``.

One index holds every repository. It stores three kinds of documents:

- ``def`` / ``chunk``: the searchable pieces of code and text (BM25 over words and identifiers,
  symbol-name fields for exact and partial name matches, the chunk text itself for snippets);
- ``file``: one per file seen, with its content hash, mtime and size (the incremental indexer's
  manifest, committed atomically with the chunks it describes) or the reason it was skipped;
- ``repo``: one per repository, with its root, commit and remote.

Readers never wait for a writer. A reader notices a commit made by any process (``meta.json``
changes) on its next search and reloads. Only one writer can exist at a time across processes
(tantivy's lock file); ``writer()`` waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from libs.common.settings import get_settings
from services.code_search.pipeline import file_key

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Names and paths (short): camelCase and snake_case split, lowercased, stemmed: processWebhook ->
# process, webhook; verify_signature -> verifi, signatur.
NAME_PATTERN = r"[A-Z]?[a-z0-9]+|[A-Z]+"

RAW_FIELDS = ("doc_type", "file_key", "repo", "path", "lang", "kind", "name", "qualified", "hash", "skip",
              "root", "commit", "url", "branch")
INT_FIELDS = ("line", "end_line", "start", "mtime", "size", "lines", "symbols", "chunks")


class IndexBusy(RuntimeError):
    """Another process holds the index writer for longer than we were willing to wait."""


def words_analyzer() -> tantivy.TextAnalyzer:
    """Bodies: split at anything but letters and digits (snake_case splits, camelCase stays whole),
    lowercased, stemmed. Five times faster than a regex tokenizer on bulk text; identifiers in a
    question are matched as phrases of these same tokens (``process_webhook`` -> "process webhook")."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def names_analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(NAME_PATTERN))
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    for name in RAW_FIELDS:
        builder.add_text_field(name, stored=name not in ("file_key", "name", "qualified"), tokenizer_name="raw")
    # Stored: the qualified name as written, for display.
    builder.add_text_field("name_words", stored=True, tokenizer_name="code_names")
    builder.add_text_field("path_words", stored=False, tokenizer_name="code_names")
    # Stored: the chunk's text, for snippets (consistent with what was indexed, no file re-read).
    # Positions: identifiers are phrase queries.
    builder.add_text_field("words", stored=True, tokenizer_name="code_words")
    for name in INT_FIELDS:
        builder.add_integer_field(name, stored=True)
    return builder.build()


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    hash: str
    mtime_ns: int
    size: int
    skip: str  # "" when the file is indexed
    language: str
    lines: int
    symbols: int
    chunks: int


@dataclass(frozen=True, slots=True)
class RepoEntry:
    name: str
    root: str
    commit: str
    url: str
    branch: str


@dataclass(frozen=True, slots=True)
class SymbolSpan:
    line: int
    end_line: int
    symbol: str
    kind: str


def _first(doc: tantivy.Document, name: str, default: Any = "") -> Any:
    value = doc.get_first(name)
    return default if value is None else value


class CodeIndex:
    """A handle on the on-disk index; one per process and directory (see ``engine.get_index``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / f"tantivy-v{SCHEMA_VERSION}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = build_schema()
        self.words = words_analyzer()
        self.names = names_analyzer()
        self._index = tantivy.Index(self.schema, path=str(self.directory), reuse=True)
        self._index.register_tokenizer("code_words", self.words)
        self._index.register_tokenizer("code_names", self.names)
        # Reloads are ours to decide (on a changed meta.json): deterministic, and immediate after a commit.
        self._index.config_reader("Manual")
        self._lock = threading.Lock()
        self._meta_stamp: tuple[int, int, int] | None = self._stamp()
        self._searcher = self._index.searcher()
        self.generation = 0
        self._repos: dict[str, RepoEntry] | None = None
        self._paths: dict[str, frozenset[str]] = {}

    # -- reading ----------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.directory / "meta.json")
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def searcher(self) -> tantivy.Searcher:
        """The current searcher, reloaded first when any process committed since the last call."""
        stamp = self._stamp()
        if stamp == self._meta_stamp:
            return self._searcher
        with self._lock:
            if stamp != self._meta_stamp:
                self._index.reload()
                self._searcher = self._index.searcher()
                self._meta_stamp = stamp
                self.generation += 1
                self._repos = None
                self._paths = {}
            return self._searcher

    def term(self, field: str, value: str | int) -> tantivy.Query:
        return tantivy.Query.term_query(self.schema, field, value)

    def regex(self, field: str, pattern: str) -> tantivy.Query:
        """Documents whose (raw) field matches the whole regex."""
        return tantivy.Query.regex_query(self.schema, field, pattern)

    def terms(self, field: str, values: list[str]) -> tantivy.Query:
        return tantivy.Query.term_set_query(self.schema, field, values)

    def _all(self, query: tantivy.Query) -> list[tantivy.Document]:
        searcher = self.searcher()
        if searcher.num_docs == 0:
            return []
        hits = searcher.search(query, max(1, searcher.num_docs), count=False).hits
        return [searcher.doc(address) for _score, address in hits]

    def manifest(self, repo: str) -> dict[str, FileEntry]:
        """Every file the index knows in a repository (indexed or skipped by content), by path."""
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Must, self.term("doc_type", "file")), (tantivy.Occur.Must, self.term("repo", repo))]
        )
        entries = {}
        for doc in self._all(query):
            entry = FileEntry(
                path=_first(doc, "path"),
                hash=_first(doc, "hash"),
                mtime_ns=_first(doc, "mtime", 0),
                size=_first(doc, "size", 0),
                skip=_first(doc, "skip"),
                language=_first(doc, "lang"),
                lines=_first(doc, "lines", 0),
                symbols=_first(doc, "symbols", 0),
                chunks=_first(doc, "chunks", 0),
            )
            entries[entry.path] = entry
        return entries

    def repositories(self) -> dict[str, RepoEntry]:
        searcher = self.searcher()
        repos = self._repos
        if repos is None:
            repos = {}
            for doc in self._all(self.term("doc_type", "repo")):
                entry = RepoEntry(
                    name=_first(doc, "repo"),
                    root=_first(doc, "root"),
                    commit=_first(doc, "commit"),
                    url=_first(doc, "url"),
                    branch=_first(doc, "branch"),
                )
                repos[entry.name] = entry
            if searcher is self._searcher:
                self._repos = repos
        return repos

    def indexed_paths(self, repo: str) -> frozenset[str]:
        """Paths of the repository's indexed files (cached until the next commit)."""
        self.searcher()
        cached = self._paths.get(repo)
        if cached is None:
            cached = frozenset(path for path, entry in self.manifest(repo).items() if not entry.skip)
            self._paths[repo] = cached
        return cached

    def symbol_spans_for(self, keys: list[str]) -> list[tuple[str, str, SymbolSpan]]:
        """(repo, path, span) of every definition in the files with these keys, in one query."""
        if not keys:
            return []
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, self.terms("file_key", keys)),
                (tantivy.Occur.Must, self.term("doc_type", "def")),
            ]
        )
        return [
            (
                _first(doc, "repo"),
                _first(doc, "path"),
                SymbolSpan(_first(doc, "line", 0), _first(doc, "end_line", 0), _first(doc, "name_words"),
                           _first(doc, "kind")),
            )
            for doc in self._all(query)
        ]

    # -- writing ----------------------------------------------------------------------------------

    @contextmanager
    def writer(self, wait_seconds: float = 300.0) -> Iterator[Writer]:
        """The index writer, waiting while another process (or thread) holds it. Commit inside."""
        deadline = time.monotonic() + wait_seconds
        threads = max(1, min(2, os.cpu_count() or 1))
        while True:
            try:
                raw = self._index.writer(heap_size=48_000_000 * threads, num_threads=threads)
                break
            except ValueError as exc:
                if "LockBusy" not in str(exc) and "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    raise IndexBusy("the index is being updated by another process; try again shortly") from exc
                time.sleep(0.1)
        writer = Writer(raw)
        del raw  # the Writer holds the only reference: closing it releases the lock
        try:
            yield writer
        except BaseException:
            writer.rollback()
            raise
        finally:
            writer.close()
        self.searcher()


class Writer:
    """Adds and deletes documents; ``commit()`` publishes them to every reader at once."""

    def __init__(self, raw: tantivy.IndexWriter) -> None:
        self._raw: tantivy.IndexWriter | None = raw

    @property
    def raw(self) -> tantivy.IndexWriter:
        if self._raw is None:
            raise RuntimeError("the index writer is closed")
        return self._raw

    def add(self, doc: dict[str, Any]) -> None:
        self.raw.add_json(json.dumps(doc))

    def add_json(self, doc: str) -> None:
        self.raw.add_json(doc)

    def delete_file(self, repo: str, path: str) -> None:
        self.raw.delete_documents_by_term("file_key", file_key(repo, path))

    def delete_file_record(self, repo: str, path: str, schema: tantivy.Schema) -> None:
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "file_key", file_key(repo, path))),
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "doc_type", "file")),
            ]
        )
        self.raw.delete_documents_by_query(query)

    def delete_repo_record(self, repo: str, schema: tantivy.Schema) -> None:
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "repo", repo)),
                (tantivy.Occur.Must, tantivy.Query.term_query(schema, "doc_type", "repo")),
            ]
        )
        self.raw.delete_documents_by_query(query)

    def delete_repo(self, repo: str) -> None:
        self.raw.delete_documents_by_term("repo", repo)

    def commit(self) -> None:
        self.raw.commit()

    def rollback(self) -> None:
        self.raw.rollback()

    def close(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            raw.garbage_collect_files()
            # Merges finish before the lock is released, so a re-index leaves no dead segments behind.
            raw.wait_merging_threads()
        except Exception:  # rolled back or already consumed: nothing left to tidy
            log.debug("index writer close", exc_info=True)
        del raw


_handles_lock = threading.Lock()
_handles: dict[Path, CodeIndex] = {}


def get_index(directory: Path | None = None) -> CodeIndex:
    """This process's handle on the index in ``directory`` (default: ``settings.index_dir``)."""
    if directory is None:
        directory = get_settings().index_dir
    key = Path(directory).resolve()
    with _handles_lock:
        handle = _handles.get(key)
        if handle is None:
            handle = _handles[key] = CodeIndex(key)
        return handle
