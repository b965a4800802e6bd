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
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tantivy

from libs.common.settings import get_settings
from services.code_search import grams
from services.code_search.grams import GramTable
from services.code_search.pipeline import file_key

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: file_key is a fast field; file records say whether their chunks are complete
# 3: ``grams`` documents (a file's trigram bitmap); line and end_line are fast fields

# Names and paths (short): camelCase and snake_case split, lowercased, stemmed: processWebhook ->
# process, webhook; verify_signature -> verifi, signatur.
NAME_PATTERN = r"[A-Z]?[a-z0-9]+|[A-Z]+"

RAW_FIELDS = ("doc_type", "file_key", "repo", "path", "lang", "kind", "name", "qualified", "hash", "skip",
              "root", "commit", "url", "branch")
INT_FIELDS = ("line", "end_line", "start", "mtime", "size", "lines", "symbols", "chunks", "complete")


RANKING_FIELDS = ("doc_type", "repo", "path", "lang", "kind", "name_words", "line", "end_line", "start")
MAX_CACHED_DOCS = 100_000  # about 30 MB of ranking fields at most

MAX_CANDIDATE_FILES = 2000  # beyond this many files, ripgrep walks the trees itself
COMMON_WORD_SHARE = 0.05


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
        # file_key is fast: the pattern prefilter aggregates matching chunks into files without
        # fetching a stored document per chunk.
        builder.add_text_field(
            name, stored=name not in ("file_key", "name", "qualified"), fast=name == "file_key", tokenizer_name="raw"
        )
    # Stored: the qualified name as written, for display.
    builder.add_text_field("name_words", stored=True, tokenizer_name="code_names")
    builder.add_text_field("path_words", stored=False, tokenizer_name="code_names")
    # Stored: the chunk's text, for snippets (consistent with what was indexed, no file re-read).
    # Positions: identifiers are phrase queries.
    builder.add_text_field("words", stored=True, tokenizer_name="code_words")
    # A file's trigram bitmap (see grams.py), on a document of its own: the manifest never loads it.
    builder.add_bytes_field("grams", stored=True)
    for name in INT_FIELDS:
        # Fast: the pattern search asks for the definitions enclosing a line as a range query.
        builder.add_integer_field(name, stored=True, fast=name in ("line", "end_line"))
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
    complete: bool = False  # see pipeline.FileResult.complete


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


def _drop_older_versions(directory: Path) -> None:
    """An index of an older schema is rebuilt under a new name: the old one is only dead weight."""
    for version in range(1, SCHEMA_VERSION):
        old = directory / f"tantivy-v{version}"
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _first(doc: tantivy.Document, name: str, default: Any = "") -> Any:
    value = doc.get_first(name)
    return default if value is None else value


class CodeIndex:
    """A handle on the on-disk index; one per process and directory (see ``engine.get_index``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / f"tantivy-v{SCHEMA_VERSION}"
        self.directory.mkdir(parents=True, exist_ok=True)
        _drop_older_versions(directory)
        self._meta_path = str(self.directory / "meta.json")  # stat-ed on every search
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
        self._paths: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._grams: GramTable | None = None
        self._stored: dict[tuple[int, int], dict[str, Any]] = {}

    # -- reading ----------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._meta_path)
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
                self._grams = None
                self._stored = {}
            return self._searcher

    def ranking_fields(self, searcher: tantivy.Searcher, address: tantivy.DocAddress) -> dict[str, Any]:
        """A chunk's stored fields but its text (what ranking reads), kept until the next commit: the
        same definitions come back in many searches, and loading a stored document costs about ten
        microseconds of mostly GIL-held time (its whole text is decoded)."""
        key = (address.segment_ord, address.doc)
        fields = self._stored.get(key) if searcher is self._searcher else None
        if fields is None:
            doc = searcher.doc(address)
            fields = {name: doc.get_first(name) for name in RANKING_FIELDS}
            if searcher is self._searcher:
                if len(self._stored) >= MAX_CACHED_DOCS:
                    self._stored = {}
                self._stored[key] = fields
        return fields

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
                complete=bool(_first(doc, "complete", 0)),
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

    def _file_sets(self, repo: str) -> tuple[frozenset[str], frozenset[str]]:
        self.searcher()
        cached = self._paths.get(repo)
        if cached is None:
            entries = [entry for entry in self.manifest(repo).values() if not entry.skip]
            cached = (
                frozenset(entry.path for entry in entries),
                frozenset(entry.path for entry in entries if not entry.complete),
            )
            self._paths[repo] = cached
        return cached

    def indexed_paths(self, repo: str) -> frozenset[str]:
        """Paths of the repository's indexed files (cached until the next commit)."""
        return self._file_sets(repo)[0]

    def incomplete_paths(self, repo: str) -> frozenset[str]:
        """Indexed files some of whose words are not in their chunks (cut long lines, ...)."""
        return self._file_sets(repo)[1]

    def files_with_words(self, groups: list[list[str]], repos: list[str]) -> set[tuple[str, str]] | None:
        """(repo, path) of the files with a chunk holding every token of at least one group, or
        None when more than MAX_CANDIDATE_FILES do (a prefilter would not pay)."""
        searcher = self.searcher()
        found: set[tuple[str, str]] = set()
        wanted = set(repos)
        # Aggregated over every repository (a repo filter costs more than it saves), kept for ``repos``.
        aggregation = {"files": {"terms": {"field": "file_key", "size": MAX_CANDIDATE_FILES + 1}}}
        for tokens in groups:
            # A group whose rarest word is in many chunks would name most files, and slowly.
            if min(searcher.doc_freq("words", token) for token in tokens) > searcher.num_docs * COMMON_WORD_SHARE:
                return None
            query = tantivy.Query.boolean_query([(tantivy.Occur.Must, self.term("words", token)) for token in tokens])
            buckets = searcher.aggregate(query, aggregation)["files"]["buckets"]
            if len(buckets) > MAX_CANDIDATE_FILES:
                return None
            for bucket in buckets:
                repo, _, path = str(bucket["key"]).partition("\x00")
                if repo in wanted:
                    found.add((repo, path))
            if len(found) > MAX_CANDIDATE_FILES:
                return None
        return found

    def _gram_table(self) -> GramTable:
        searcher = self.searcher()
        table = self._grams
        if table is None:
            keys, rows = [], []
            for doc in self._all(self.term("doc_type", "grams")):
                row = doc.get_first("grams")
                if isinstance(row, bytes) and len(row) == grams.ROW_BYTES:
                    keys.append(file_key(_first(doc, "repo"), _first(doc, "path")))
                    rows.append(row)
            table = GramTable(keys, rows)
            if searcher is self._searcher:
                self._grams = table
        return table

    def warm(self) -> None:
        """Build now what the first searches would otherwise build while a user waits (each repository's file
        manifest, the trigram table: a few hundred milliseconds on a large index, under the GIL)."""
        for repo in self.repositories():
            self.indexed_paths(repo)
        self._gram_table()

    def files_with_grams(self, alternatives: list[list[int]], repos: list[str]) -> set[tuple[str, str]] | None:
        """(repo, path) of the indexed files whose trigram bitmap holds every bucket of at least one
        alternative, plus any file without a bitmap; None when more than MAX_CANDIDATE_FILES."""
        table = self._gram_table()
        wanted = set(repos)
        found: set[tuple[str, str]] = set()
        for key in table.matching(alternatives):
            repo, _, path = key.partition("\x00")
            if repo in wanted:
                found.add((repo, path))
        for repo in repos:
            found.update((repo, path) for path in table.missing(repo, self.indexed_paths(repo)))
        return None if len(found) > MAX_CANDIDATE_FILES else found

    def enclosing_spans(self, key: str, line: int) -> list[SymbolSpan]:
        """The definitions of one file (by file key) whose line range holds ``line``."""
        integer = tantivy.FieldType.Integer
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, self.term("file_key", key)),
                (tantivy.Occur.Must, self.term("doc_type", "def")),
                (tantivy.Occur.Must, tantivy.Query.range_query(self.schema, "line", integer, None, line)),
                (tantivy.Occur.Must, tantivy.Query.range_query(self.schema, "end_line", integer, line, None)),
            ]
        )
        searcher = self.searcher()
        docs = [searcher.doc(address) for _score, address in searcher.search(query, 64, count=False).hits]
        return [
            SymbolSpan(_first(doc, "line", 0), _first(doc, "end_line", 0), _first(doc, "name_words"),
                       _first(doc, "kind"))
            for doc in docs
        ]

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

    def chunk_texts(self, keys: list[str]) -> dict[str, list[tuple[int, str, str]]]:
        """file key -> (first line, qualified symbol, text) of each of the files' chunks, in line order."""
        if not keys:
            return {}
        query = tantivy.Query.boolean_query(
            [
                (tantivy.Occur.Must, self.terms("file_key", keys)),
                (tantivy.Occur.Must, self.terms("doc_type", ["def", "chunk"])),
            ]
        )
        out: dict[str, list[tuple[int, str, str]]] = {}
        for doc in self._all(query):
            key = file_key(_first(doc, "repo"), _first(doc, "path"))
            out.setdefault(key, []).append((_first(doc, "line", 0), _first(doc, "name_words"), _first(doc, "words")))
        for chunks in out.values():
            chunks.sort()
        return out

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
    # Every search asks: the directory as given first (resolving it stats every path component).
    handle = _handles.get(Path(directory))
    if handle is not None:
        return handle
    key = Path(directory).resolve()
    with _handles_lock:
        handle = _handles.get(key)
        if handle is None:
            handle = _handles[key] = CodeIndex(key)
        _handles[Path(directory)] = handle
        return handle
