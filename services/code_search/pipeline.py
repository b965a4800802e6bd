"""One file from bytes to index documents: read, hash, content checks, symbols, chunks.

Pure and picklable, so the indexer can run it in worker processes (tree-sitter parsing is the
expensive part of indexing) and tests can call it directly.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _string

from services.code_search import grams, languages
from services.code_search.chunker import Chunk, chunk_lines
from services.code_search.symbols import Symbol, extract
from services.code_search.walker import Candidate

log = logging.getLogger(__name__)

BINARY_SNIFF_BYTES = 8192
_CPP_HINT = re.compile(rb"^\s*(?:class\s+\w+\s*[:{]|namespace\s+\w+|template\s*<)|\bstd::", re.MULTILINE)
# Minified or generated: long files whose lines average beyond what people write.
MINIFIED_MIN_BYTES = 4096
MINIFIED_AVG_LINE = 300


def file_key(repo: str, path: str) -> str:
    """The key shared by every index document of one file (what a re-index deletes by)."""
    return f"{repo}\x00{path}"


@dataclass(slots=True)
class FileResult:
    path: str
    size: int
    mtime_ns: int
    hash: str = ""
    language: str = ""
    skip: str = ""  # why the file is not indexed, "" when it is
    unchanged: bool = False  # same content as the index already holds: nothing to re-add
    lines: int = 0
    symbols: int = 0
    chunks: int = 0
    # Every line with a letter or digit is, whole, in one of the file's chunks: the words of the
    # chunks then say which words the file holds (the pattern search's prefilter relies on it).
    complete: bool = False
    docs: list[str] = field(default_factory=list)  # JSON documents for the index

    def file_record(self, repo: str) -> dict[str, object]:
        return {
            "doc_type": "file",
            "file_key": file_key(repo, self.path),
            "repo": repo,
            "path": self.path,
            "path_words": self.path,
            "lang": self.language,
            "hash": self.hash,
            "skip": self.skip,
            "mtime": self.mtime_ns,
            "size": self.size,
            "lines": self.lines,
            "symbols": self.symbols,
            "chunks": self.chunks,
            "complete": int(self.complete),
        }


_DEF = '"def"'
_CHUNK = '"chunk"'
_WORD_CHAR = re.compile(r"[^\W_]")


def _complete(lines: list[str], chunks: list[Chunk], whole: bytearray) -> bool:
    """Whether every line with a word in it is in some chunk as it is (long lines and long chunks
    are cut, and near-empty windows dropped). Lines the chunker kept whole need no look; for the
    few others, any chunk holding the same line as it is will do."""
    covered: set[str] | None = None
    index = whole.find(0)
    while index != -1:
        line = lines[index]
        if _WORD_CHAR.search(line):
            if covered is None:
                covered = set()
                for chunk in chunks:
                    covered.update(chunk.text.split("\n"))
            if line not in covered:
                return False
        index = whole.find(0, index + 1)
    return True


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def content_skip_reason(data: bytes) -> str | None:
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        return "binary"
    if len(data) >= MINIFIED_MIN_BYTES and len(data) / (data.count(b"\n") + 1) > MINIFIED_AVG_LINE:
        return "minified"
    return None


def _symbols(data: bytes, language: str, path: str) -> list[Symbol]:
    if not languages.has_grammar(language):
        return []
    try:
        return extract(data, language, details=False)
    except Exception:  # a grammar bug must not lose the file: it is still indexed as text
        log.warning("symbol extraction failed for %s (%s)", path, language, exc_info=True)
        return []


def process_file(repo: str, candidate: Candidate, known_hash: str = "") -> FileResult:
    result = FileResult(path=candidate.rel, size=candidate.size, mtime_ns=candidate.mtime_ns)
    try:
        with open(candidate.abs, "rb") as handle:
            data = handle.read()
    except OSError:
        result.skip = "unreadable"
        return result
    result.size = len(data)
    result.hash = content_hash(data)
    language = languages.detect(candidate.rel) or ""
    if language == "c" and candidate.rel.endswith(".h") and _CPP_HINT.search(data):
        language = "cpp"  # a C++ header: the C grammar would lose its classes
    result.language = language
    if known_hash and known_hash == result.hash:
        result.unchanged = True
        return result
    reason = content_skip_reason(data)
    if reason is not None:
        result.skip = reason
        return result
    text = data.decode("utf-8", errors="replace")
    symbols = _symbols(data, language, candidate.rel)
    lines = text.split("\n")
    chunks, whole = chunk_lines(lines, language or None, symbols)
    result.lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    result.symbols = len(symbols)
    result.chunks = len(chunks)
    result.complete = _complete(lines, chunks, whole)
    result.docs = _documents(repo, candidate.rel, language, chunks, data)
    return result


def _documents(repo: str, path: str, language: str, chunks: list[Chunk], data: bytes) -> list[str]:
    """The file's index documents as JSON text. Written out by hand rather than through ``json.dumps``
    of a dict per chunk: the fields shared by every chunk of the file are escaped once, and no dict is
    built (about half the cost, on tens of thousands of chunks). Strings are escaped by the same function
    ``json.dumps`` uses, so tantivy reads the same values."""
    file_fields = (
        f'"file_key":{_string(file_key(repo, path))},"repo":{_string(repo)},"path":{_string(path)},'
        f'"path_words":{_string(path)},"lang":{_string(language)}'
    )
    docs = []
    for chunk in chunks:
        names = ""
        if chunk.symbol:
            names = f',"name_words":{_string(chunk.symbol)}'
        if chunk.name:
            names += f',"name":{_string(chunk.name.lower())},"qualified":{_string(chunk.symbol.lower())}'
        docs.append(
            f'{{"doc_type":{_DEF if chunk.is_def else _CHUNK},{file_fields},"kind":{_string(chunk.kind)},'
            f'"words":{_string(chunk.text)},"line":{chunk.line},"end_line":{chunk.end},"start":{chunk.start}{names}}}'
        )
    # The whole file's trigrams, whatever its chunks kept: the pattern search's prefilter.
    docs.append(
        f'{{"doc_type":"grams","file_key":{_string(file_key(repo, path))},"repo":{_string(repo)},'
        f'"path":{_string(path)},"grams":"{grams.encoded(data)}"}}'
    )
    return docs
