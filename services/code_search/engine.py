"""Search over the indexed repositories: questions (symbol names + BM25, fused) and patterns (ripgrep).

Question mode runs two rankers on the tantivy index and fuses them with reciprocal rank fusion:

- symbols: definitions whose name or qualified name is an identifier of the question (boosted
  hard), or whose split name shares words with it (``verify_twilio_signature`` for "signature
  verified");
- keywords: BM25 over every chunk's words, identifiers as phrases, symbol names and paths;
- semantic (only with an embeddings endpoint): the chunks whose vectors are closest to the question's.

A definition whose name is exactly an identifier of the question goes first; then no file gets
more than two places until every other file has had its turn.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import tantivy

from libs.common.events import Hit
from libs.common.settings import get_settings
from services.code_search import grams, regex, semantic, syntax
from services.code_search import query as query_parser
from services.code_search.index import CodeIndex, RepoEntry, SymbolSpan, get_index
from services.code_search.indexer import IndexSummary, index_repository, remove_repository
from services.code_search.languages import EXTENSIONS, FILENAMES, detect
from services.code_search.permalinks import permalink
from services.code_search.pipeline import file_key

__all__ = ["FileGroup", "IndexSummary", "SearchResult", "index_repository", "remove_repository", "search"]

log = logging.getLogger(__name__)

DOC_TYPES = ("def", "chunk", "file", "repo", "grams")  # every doc_type the index holds (see index.py)
RRF_K = 20  # top-heavy: measured better than the usual 60 on short candidate lists
SYMBOL_CANDIDATES = 30
KEYWORD_CANDIDATES = 40
SEMANTIC_CANDIDATES = 30
MAX_PER_FILE = 2
TEST_PENALTY = 0.5  # tests describe behaviour in words and would otherwise answer "where is X" questions
PATTERN_MAX_MATCHES = 500
PATTERN_FILTERED_MAX_MATCHES = 5000  # path/sym filters apply after ripgrep: let more lines through
FRAME_BOOST = 10.0
SNIPPET_LINES = 6
SNIPPET_LINE_CHARS = 120

_question_slots = threading.BoundedSemaphore(max(1, min(2, os.cpu_count() or 1)))

# Errors the caller caused (an HTTP API answers 400); the rest are states of the index.
CLIENT_ERRORS = frozenset({"empty_query", "query_too_long", "invalid_pattern", "invalid_mode", "invalid_filter"})


@dataclass
class FileGroup:
    repo: str
    path: str
    language: str | None
    hits: list[Hit]


@dataclass
class SearchResult:
    hits: list[Hit] = field(default_factory=list)  # a file's hits are adjacent, files in order of their best hit
    took_ms: float = 0.0
    kinds: list[str] = field(default_factory=list)  # rankers behind the hits: symbol, keyword, regex
    error: str | None = None  # for the user: why there are no results
    code: str | None = None  # the error's kind: empty_query, invalid_pattern, unknown_repo, no_index, ...
    note: str | None = None  # results came back but are partial (pattern timeout, output cap)

    @property
    def groups(self) -> list[FileGroup]:
        """The hits per file, best file first."""
        groups: dict[tuple[str, str], FileGroup] = {}
        for hit in self.hits:
            key = (hit.repo, hit.path)
            if key not in groups:
                groups[key] = FileGroup(hit.repo, hit.path, hit.language, [])
            groups[key].hits.append(hit)
        return list(groups.values())


def _linked(hit: Hit, known: dict[str, RepoEntry]) -> Hit:
    entry = known.get(hit.repo)
    url = permalink(entry.url, entry.commit, hit.path, hit.line, hit.end_line) if entry and entry.url else None
    return hit.model_copy(update={"url": url}) if url else hit


def _grouped(hits: list[Hit]) -> list[Hit]:
    order: dict[tuple[str, str], list[Hit]] = {}
    for hit in hits:
        order.setdefault((hit.repo, hit.path), []).append(hit)
    return [hit for same_file in order.values() for hit in same_file]


def _fail(started: float, code: str, message: str) -> SearchResult:
    return SearchResult(took_ms=_elapsed(started), error=message, code=code)


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def search(query: str, repos: Sequence[str] | None = None, limit: int = 8, mode: str = "question") -> SearchResult:
    """Search the indexed repositories (all of them, or ``repos``). ``query`` is written in the search
    language of ``syntax`` (free text plus repo:, path:, lang:, sym:, re:, case: filters). Never raises
    for bad input: the result's ``error`` says what is wrong in words a chat user understands."""
    started = time.perf_counter()
    text = (query or "").strip()
    if not text:
        return _fail(started, "empty_query", "the search is empty: ask a question or give a pattern")
    if len(text) > query_parser.MAX_QUERY_CHARS:
        return _fail(
            started, "query_too_long", f"the search is too long (at most {query_parser.MAX_QUERY_CHARS} characters)"
        )
    if "\x00" in text:
        return _fail(started, "empty_query", "the search contains a NUL character")
    if mode not in ("question", "pattern"):
        return _fail(started, "invalid_mode", f"unknown search mode {mode!r}: use question or pattern")
    try:
        parsed = syntax.parse_search(text, mode)
    except syntax.QueryError as exc:
        return _fail(started, exc.code, exc.message)
    limit = max(1, min(int(limit), query_parser.MAX_LIMIT))

    index = get_index()
    known = index.repositories()
    if not known:
        return _fail(started, "no_index", "no repository is indexed yet")
    scope: list[str] | None = None
    for wanted_list in (list(repos or ()), parsed.repos):
        wanted = list(dict.fromkeys(r for r in wanted_list if r))
        if not wanted:
            continue
        chosen = [name for name in wanted if name in known and (scope is None or name in scope)]
        if not chosen:
            names = ", ".join(sorted(known))
            return _fail(started, "unknown_repo", f"no indexed repository named {', '.join(wanted)} (indexed: {names})")
        scope = chosen

    if mode == "pattern" or parsed.pattern is not None:
        pattern = parsed.pattern if parsed.pattern is not None else parsed.text
        result = _pattern(index, pattern, parsed, scope, known, limit)
    else:
        # The question's embedding is a network call: made before taking a slot, not while holding one.
        meaning = semantic.question_vector(parsed.text)
        # Questions are CPU work, mostly under the GIL: run a few at a time, first come first
        # served. Fifty threads at once otherwise trade the GIL back and forth (each tantivy call
        # releases and re-acquires it) and all finish late together.
        with _question_slots:
            result = _question(index, parsed, scope, limit, meaning)
    result.hits = [_linked(hit, known) for hit in _grouped(result.hits)]
    result.took_ms = _elapsed(started)
    return result


# -- question mode ----------------------------------------------------------------------------------


def _filters(
    index: CodeIndex, scope: list[str] | None, doc_types: list[str], search: syntax.SearchQuery | None = None
) -> list[tuple[tantivy.Occur, Any]]:
    # Filters are exclusions where possible: a MustNot costs a skip per excluded document, while a
    # Must over a term set materialises every matching document on each search (measured: 0.5-1.3 ms
    # of a 2 ms search on SQLAlchemy, and the GIL is held for part of it).
    clauses = [(tantivy.Occur.MustNot, index.term("doc_type", other)) for other in DOC_TYPES if other not in doc_types]
    if scope:
        others = [name for name in index.repositories() if name not in scope]
        if len(others) <= len(scope):
            clauses += [(tantivy.Occur.MustNot, index.term("repo", name)) for name in others]
        else:
            clauses.append((tantivy.Occur.Must, index.terms("repo", scope)))
    if search is None:
        return clauses
    if search.languages:
        clauses.append((tantivy.Occur.Must, index.terms("lang", search.languages)))
    if search.path_regexes:
        either = [(tantivy.Occur.Should, index.regex("path", rx)) for rx in search.path_regexes]
        clauses.append((tantivy.Occur.Must, tantivy.Query.boolean_query(either)))
    for rx in search.excluded_paths:
        clauses.append((tantivy.Occur.MustNot, index.regex("path", rx)))
    if search.symbols:
        clauses.append((tantivy.Occur.Must, index.term("doc_type", "def")))
        either = [(tantivy.Occur.Should, _symbol_filter(index, symbol)) for symbol in search.symbols]
        clauses.append((tantivy.Occur.Must, tantivy.Query.boolean_query(either)))
    return clauses


def _symbol_regex(symbol: str) -> str:
    return "".join(".*" if c == "*" else syntax._literal(c) for c in symbol.lower())


def _symbol_filter(index: CodeIndex, symbol: str) -> tantivy.Query:
    """sym:NAME -> definitions named NAME; sym:A.b -> qualified names ending in A.b (any outer scope)."""
    rx = _symbol_regex(symbol)
    if "." in symbol:
        return index.regex("qualified", "(.*[.])?" + rx)
    return index.regex("name", rx) if "*" in symbol else index.term("name", symbol.lower())


def _symbol_matches(symbol: str, wanted: list[str]) -> bool:
    lowered = symbol.lower()
    for name in wanted:
        rx = _symbol_regex(name)
        if re.fullmatch("(.*[.])?" + rx if "." in name else rx, lowered if "." in name else lowered.split(".")[-1]):
            return True
    return False


def _frame_regex(frame: query_parser.Frame) -> str:
    return "(.*/)?" + "".join(syntax._literal(c) for c in frame.path)


def _boosted(query: tantivy.Query, boost: float) -> tantivy.Query:
    return tantivy.Query.boost_query(query, boost)


@lru_cache(maxsize=65536)
def _analyzed_name(analyzer: tantivy.TextAnalyzer, name: str) -> frozenset[str]:
    return frozenset(analyzer.analyze(name))


def _name_tokens(index: CodeIndex, name: str) -> frozenset[str]:
    """A symbol name's tokens; the same few thousand names come back in every search."""
    return _analyzed_name(index.names, name)


def _tokens(analyzer: tantivy.TextAnalyzer, words: Sequence[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        for token in analyzer.analyze(word):
            if token not in out:
                out.append(token)
    return out


def _symbol_query(
    index: CodeIndex, parsed: query_parser.ParsedQuery, scope: list[str] | None, search: syntax.SearchQuery
) -> Any:
    should: list[tuple[tantivy.Occur, Any]] = []
    for frame in parsed.frames:
        where = index.regex("path", _frame_regex(frame))
        if frame.function:
            name = frame.function.rsplit(".", 1)[-1].lower()
            both = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, index.term("name", name)), (tantivy.Occur.Must, where)]
            )
            should.append((tantivy.Occur.Should, _boosted(both, FRAME_BOOST)))
        should.append((tantivy.Occur.Should, _boosted(where, 1.0)))
    for qualified in parsed.qualified:
        should.append((tantivy.Occur.Should, _boosted(index.term("qualified", qualified.lower()), 12.0)))
    for identifier in parsed.identifiers:
        should.append((tantivy.Occur.Should, _boosted(index.term("name", identifier.lower()), 6.0)))
    for token in _tokens(index.names, parsed.words):
        should.append((tantivy.Occur.Should, index.term("name_words", token)))
    if not should:
        return None
    return tantivy.Query.boolean_query(
        [*_filters(index, scope, ["def"], search), (tantivy.Occur.Must, tantivy.Query.boolean_query(should))]
    )


def _keyword_query(
    index: CodeIndex, parsed: query_parser.ParsedQuery, scope: list[str] | None, search: syntax.SearchQuery
) -> Any:
    should: list[tuple[tantivy.Occur, Any]] = []
    for frame in parsed.frames:
        should.append((tantivy.Occur.Should, _boosted(index.regex("path", _frame_regex(frame)), 1.5)))
    word_tokens = _tokens(index.words, parsed.words)
    for token in word_tokens:
        should.append((tantivy.Occur.Should, index.term("words", token)))
    for identifier in [*parsed.qualified, *parsed.identifiers]:
        tokens = index.words.analyze(identifier)
        if len(tokens) > 1:
            phrase = tantivy.Query.phrase_query(index.schema, "words", list[str | tuple[int, str]](tokens))
            should.append((tantivy.Occur.Should, _boosted(phrase, 2.0)))
        elif tokens and tokens[0] not in word_tokens:
            should.append((tantivy.Occur.Should, _boosted(index.term("words", tokens[0]), 2.0)))
    name_tokens = _tokens(index.names, parsed.words)
    for token in name_tokens:
        should.append((tantivy.Occur.Should, _boosted(index.term("name_words", token), 0.5)))
        should.append((tantivy.Occur.Should, _boosted(index.term("path_words", token), 0.3)))
    for token in _tokens(index.names, parsed.paths):
        should.append((tantivy.Occur.Should, _boosted(index.term("path_words", token), 1.5)))
    if not should:
        return None
    return tantivy.Query.boolean_query(
        [*_filters(index, scope, ["def", "chunk"], search), (tantivy.Occur.Must, tantivy.Query.boolean_query(should))]
    )


@dataclass(slots=True)
class _Candidate:
    address: tantivy.DocAddress
    # Stored fields but the text (``CodeIndex.ranking_fields``): the index's cached dict itself, read
    # only (a copy per candidate per search was a tenth of the ranking's cost).
    fields: dict[str, Any]
    score: float = 0.0
    rankers: set[str] = field(default_factory=set)
    words: str | None = None  # the text, read for the few chosen

    def get(self, name: str, default: Any = "") -> Any:
        value = self.fields.get(name)
        return default if value is None else value

    def text(self, searcher: tantivy.Searcher) -> str:
        if self.words is None:
            self.words = str(searcher.doc(self.address).get_first("words") or "")
        return self.words


def _semantic_ranking(
    index: CodeIndex,
    searcher: tantivy.Searcher,
    meaning: tuple[semantic.EmbeddingConfig, Any],
    scope: list[str] | None,
    search: syntax.SearchQuery,
) -> list[tuple[float, tantivy.DocAddress]]:
    """The chunks nearest the question's meaning that the query's filters allow, nearest first."""
    config, vector = meaning
    neighbours = semantic.nearest(config, vector, scope, SEMANTIC_CANDIDATES * 2)
    if not neighbours:
        return []
    integer = tantivy.FieldType.Integer
    spots = [
        (
            tantivy.Occur.Should,
            tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, index.term("file_key", n.file_key)),
                    (tantivy.Occur.Must, tantivy.Query.range_query(index.schema, "line", integer, n.line, n.line)),
                ]
            ),
        )
        for n in neighbours
    ]
    query = tantivy.Query.boolean_query(
        [*_filters(index, scope, ["def", "chunk"], search), (tantivy.Occur.Must, tantivy.Query.boolean_query(spots))]
    )
    at: dict[tuple[str, int], tantivy.DocAddress] = {}
    for _score, address in searcher.search(query, len(neighbours), count=False).hits:
        fields = index.ranking_fields(searcher, address)
        at[(file_key(fields["repo"], fields["path"]), int(fields["line"]))] = address
    ranked = [(n.score, at[(n.file_key, n.line)]) for n in neighbours if (n.file_key, n.line) in at]
    return ranked[:SEMANTIC_CANDIDATES]


def _question(
    index: CodeIndex,
    search: syntax.SearchQuery,
    scope: list[str] | None,
    limit: int,
    meaning: tuple[semantic.EmbeddingConfig, Any] | None = None,
) -> SearchResult:
    # sym:NAME ranks like the name asked for in backticks, among the definitions it allows.
    named = " ".join(f"`{symbol}`" for symbol in search.symbols if "*" not in symbol)
    parsed = query_parser.parse(f"{search.text} {named}".strip())
    if parsed.empty and search.symbols:
        parsed.words = [w for s in search.symbols for w in query_parser.split_identifier(s.replace("*", " "))]
    if parsed.empty:
        return SearchResult(
            error="nothing to search for in that question: name a function, a file or a topic", code="empty_query"
        )
    searcher = index.searcher()
    candidates: dict[tuple[int, int], _Candidate] = {}
    rankings: list[tuple[str, list[tuple[float, tantivy.DocAddress]]]] = []
    for ranker, built, depth in (
        ("symbol", _symbol_query(index, parsed, scope, search), SYMBOL_CANDIDATES),
        ("keyword", _keyword_query(index, parsed, scope, search), KEYWORD_CANDIDATES),
    ):
        if built is not None:
            rankings.append((ranker, searcher.search(built, depth, count=False).hits))
    if meaning is not None:
        rankings.append(("semantic", _semantic_ranking(index, searcher, meaning, scope, search)))
    name_tokens = _tokens(index.names, parsed.words)
    idf = {token: _idf(searcher, token) for token in name_tokens}
    total_idf = sum(idf.values()) or 1.0
    qualified = {q.lower() for q in parsed.qualified}
    identifiers = {i.lower() for i in parsed.identifiers}
    for ranker, found in rankings:
        top = found[0][0] if found else 1.0
        for rank, (score, address) in enumerate(found):
            key = (address.segment_ord, address.doc)
            candidate = candidates.get(key)
            if candidate is None:
                candidate = candidates[key] = _Candidate(address, index.ranking_fields(searcher, address))
            # Keyword and semantic: how close to the best match (a long tail of weak matches counts less).
            weight = score / top if top > 0 else 1.0
            if ranker == "symbol":
                # A name that shares only common words with the question ("connection", "pool") says
                # little; one that shares the rare ones ("recycled") says a lot.
                symbol = candidate.get("name_words").lower()
                exact = _names_qualified(symbol, qualified) or symbol.rsplit(".", 1)[-1] in identifiers
                shared = _name_tokens(index, candidate.get("name_words")).intersection(idf)
                weight = 1.0 if exact else sum(idf[token] for token in shared) / total_idf
            candidate.score += weight / (RRF_K + rank + 1)
            candidate.rankers.add(ranker)

    for candidate in candidates.values():
        if candidate.get("doc_type") != "def":
            continue
        symbol = candidate.get("name_words").lower()
        name = symbol.rsplit(".", 1)[-1]
        # An exact definition beats any fused score (each ranker adds at most 1/21); among several
        # (overloads, stubs), the one with a body first.
        span = int(candidate.get("end_line", 0)) - int(candidate.get("line", 0))
        if _names_qualified(symbol, qualified):
            candidate.score += 1.0 + min(span, 50) / 10_000
        elif name in identifiers:
            bonus = 0.5 if parsed.qualified or len(parsed.identifiers) > 1 else 0.75
            candidate.score += bonus + min(span, 50) / 10_000

    frames = [(re.compile(_frame_regex(frame)), frame) for frame in parsed.frames]
    for candidate in candidates.values():
        path = candidate.get("path")
        for pattern, frame in frames:
            if not pattern.fullmatch(path):
                continue
            # The definition the trace ran through, at the line it names: that is the code in question.
            inside = int(candidate.get("start", 0)) <= frame.line <= int(candidate.get("end_line", 0))
            candidate.score += (0.6 if inside else 0.05) + (0.2 if inside and frame.innermost else 0.0)

    for candidate in candidates.values():
        if _is_test_path(candidate.get("path")):
            candidate.score *= TEST_PENALTY

    if search.case:
        # Case-sensitive: the names asked for must appear as written.
        written = [*parsed.identifiers] or parsed.text.split()
        for key in [k for k, c in candidates.items() if not all(w in c.text(searcher) for w in written)]:
            del candidates[key]

    ordered = sorted(candidates.values(), key=lambda c: (-c.score, c.get("path"), c.get("line", 0)))
    chosen = _spread(ordered, limit, lambda c: (c.get("repo"), c.get("path")))
    query_tokens = set(_tokens(index.words, [*parsed.words, *parsed.identifiers]))
    hits = [_question_hit(c, query_tokens, index, searcher) for c in chosen]
    kinds = sorted({ranker for c in chosen for ranker in c.rankers}, key=["symbol", "keyword", "semantic"].index)
    return SearchResult(hits=hits, kinds=kinds)


_TEST_DIRS = frozenset(
    {"test", "tests", "__tests__", "spec", "specs", "testdata", "test_data", "fixtures", "testing", "e2e", "mocks"}
)
_TEST_FILE = re.compile(
    r"(^test_.*\.py$|_test\.(py|go|rb|c|cc|cpp)$|\.(test|spec)\.[jt]sx?$|Tests?\.(java|kt|cs)$|_spec\.rb$|^conftest\.py$)"
)


@lru_cache(maxsize=65536)  # a pure function of the path; the same files come back in every search
def _is_test_path(path: str) -> bool:
    """Tests, fixtures and test data: asked about less often than the code they exercise."""
    *folders, name = path.split("/")
    return bool(_TEST_DIRS.intersection(folders)) or bool(_TEST_FILE.search(name))


def _names_qualified(symbol: str, qualified: set[str]) -> bool:
    """``relay.lrucache.evict`` answers ``LruCache.evict`` (a question rarely spells every scope)."""
    return any(symbol == q or symbol.endswith("." + q) for q in qualified)


def _idf(searcher: tantivy.Searcher, token: str) -> float:
    total = max(1, searcher.num_docs)
    frequency = searcher.doc_freq("words", token)
    return math.log(1 + (total - frequency + 0.5) / (frequency + 0.5))


def _spread(ordered: list[Any], limit: int, file_of: Any) -> list[Any]:
    """Best first, at most MAX_PER_FILE per file until every file had its turn, then the rest."""
    chosen: list[Any] = []
    overflow: list[Any] = []
    per_file: dict[Any, int] = defaultdict(int)
    for item in ordered:
        key = file_of(item)
        if per_file[key] < MAX_PER_FILE:
            per_file[key] += 1
            chosen.append(item)
            if len(chosen) == limit:
                return chosen
        else:
            overflow.append(item)
    chosen.extend(overflow[: limit - len(chosen)])
    return chosen


def _shorten(line: str) -> str:
    line = line.rstrip()
    return line if len(line) <= SNIPPET_LINE_CHARS else line[: SNIPPET_LINE_CHARS - 1] + "…"


def _snippet(lines: Sequence[str]) -> str:
    shortened = [_shorten(line.replace("\t", "    ")) for line in lines]
    # textwrap.dedent's result without its regexes (a third of a hit's cost): here no line has a tab
    # or trailing whitespace, so blank lines are empty and the common margin is the fewest leading spaces.
    margin = min((len(line) - len(line.lstrip(" ")) for line in shortened if line), default=0)
    return "\n".join(line[margin:] for line in shortened).strip("\n")


def _nothing(_text: str, _position: int = 0) -> None:
    return None


@lru_cache(maxsize=1024)
def _any_prefix(prefixes: frozenset[str]) -> Callable[[str, int], re.Match[str] | None]:
    """search(text, position) for the first of the prefixes (never a match when there are none)."""
    if not prefixes:
        return _nothing
    return re.compile("|".join(re.escape(prefix) for prefix in sorted(prefixes, key=len))).search


def _best_line(text: str, lines: list[str], query_tokens: set[str], analyzer: tantivy.TextAnalyzer) -> int:
    """The chunk line (index) sharing the most tokens with the question: the first such line, or the
    first non-blank one when no line shares any."""
    # Lowercasing never adds or removes a line break: the lowered lines align with the lines.
    lowered = text.lower()
    lowered_lines = lowered.split("\n")
    best = next((number for number, entry in enumerate(lowered_lines) if entry.strip()), None)
    if best is None:
        return 0
    # A stem's first letters appear in any word it came from (recycl, happi <- happy): lines
    # without one cannot score, and are not analysed (most lines of a long chunk).
    has_prefix = _any_prefix(frozenset(token[: max(1, min(4, len(token) - 1))] for token in query_tokens))
    wanted = len(query_tokens)
    best_score = 0
    if has_prefix(lowered_lines[best], 0) is not None:
        best_score = len(query_tokens.intersection(analyzer.analyze(lines[best])))
    if best_score == wanted:
        return best  # no line can score higher
    # The lines after it that hold a prefix, found by one scan of the whole text rather than a
    # search per line; the others score 0, which never beats the first line.
    number = best + 1
    position = sum(map(len, lowered_lines[:number])) + number  # where line ``number`` starts
    while (match := has_prefix(lowered, position)) is not None:
        number += lowered.count("\n", position, match.start())
        score = len(query_tokens.intersection(analyzer.analyze(lines[number])))
        if score > best_score:
            best, best_score = number, score
            if score == wanted:
                break
        position = lowered.find("\n", match.end()) + 1
        if position == 0:
            break
        number += 1
    return best


def _question_hit(
    candidate: _Candidate, query_tokens: set[str], index: CodeIndex, searcher: tantivy.Searcher
) -> Hit:
    text = candidate.text(searcher)
    lines = text.split("\n")
    start = int(candidate.get("start", 1))
    line = int(candidate.get("line", start))
    end_line = int(candidate.get("end_line", line))
    symbol = candidate.get("name_words") or None
    if candidate.get("doc_type") == "def":
        # The symbol's head: its definition line on, blank lines dropped.
        offset = max(0, line - start)
        head = list(islice((entry for entry in lines[offset:] if entry.strip()), SNIPPET_LINES))
        snippet = _snippet(head)
    else:
        best = _best_line(text, lines, query_tokens, index.words)
        first = max(0, best - 1)
        snippet = _snippet(lines[first : first + SNIPPET_LINES - 1])
        line = start + best
    return Hit(
        repo=candidate.get("repo"),
        path=candidate.get("path"),
        line=line,
        end_line=max(line, end_line),
        symbol=symbol,
        kind=candidate.get("kind") or None,
        language=candidate.get("lang") or None,
        score=round(candidate.score, 5),
        snippet=snippet,
    )


# -- pattern mode -----------------------------------------------------------------------------------

_DEFINITION_LINE = re.compile(
    r"\s*(?:@\w+\s+)?(?:(?:export|default|public|private|protected|internal|static|final|abstract|async|pub"
    r"|pub\(crate\)|override|virtual|inline|extern|unsafe|const)\s+)*"
    r"(?:def|class|func|function|fn|struct|interface|enum|trait|impl|type|module|namespace|record|union)\b"
)


def _language_globs(languages: list[str]) -> list[str]:
    globs = [f"*{ext}" for ext, lang in EXTENSIONS.items() if lang in languages]
    globs += [name for name, lang in FILENAMES.items() if lang in languages]
    if "cpp" in languages:
        globs.append("*.h")  # C++ headers are often .h
    return globs


def _pattern(
    index: CodeIndex,
    pattern: str,
    search: syntax.SearchQuery,
    scope: list[str] | None,
    known: dict[str, RepoEntry],
    limit: int,
) -> SearchResult:
    if len(pattern) > regex.MAX_PATTERN_CHARS:
        return SearchResult(
            error=f"invalid pattern: longer than {regex.MAX_PATTERN_CHARS} characters", code="invalid_pattern"
        )
    settings = get_settings()
    names = scope or sorted(known)
    repos = [known[name] for name in names]
    roots = [Path(repo.root) for repo in repos]
    present = [i for i, root in enumerate(roots) if root.is_dir()]
    if not present:
        return SearchResult(error="the indexed repositories are not on this machine", code="no_index")
    post_filtered = bool(search.path_regexes or search.excluded_paths or search.symbols)
    cap = PATTERN_FILTERED_MAX_MATCHES if post_filtered else PATTERN_MAX_MATCHES
    files = _candidate_files(
        index, pattern, [repos[i].name for i in present], [roots[i] for i in present], search.case
    )
    include = _language_globs(search.languages) if search.languages else None
    if files is not None and include is not None:
        # ripgrep's file types filter what it walks, not the files it is given: the same globs here.
        files = [f for f in files if any(fnmatchcase(f.rsplit(os.sep, 1)[-1], glob) for glob in include)]
    try:
        outcome = regex.search(
            pattern,
            [roots[i] for i in present],
            files=files,
            max_matches=cap,
            timeout=settings.search.regex_timeout,
            max_filesize=settings.search.max_file_bytes,
            case_sensitive=search.case,
            include=include,
        )
    except regex.RipgrepMissing as exc:
        log.error("pattern search unavailable: %s", exc)
        return SearchResult(error="pattern search is not available on this server", code="unavailable")
    if outcome.error:
        return SearchResult(error=f"invalid pattern: {outcome.error}", code="invalid_pattern")

    matches = []
    indexed = {i: index.indexed_paths(repos[i].name) for i in present}
    for match in outcome.matches:
        repo = repos[present[match.root]]
        if match.path in indexed[present[match.root]] and search.path_allowed(match.path):
            matches.append((repo.name, match))
    if search.languages:
        matches = [m for m in matches if (detect(m[1].path) or "") in search.languages or m[1].path.endswith(".h")]
    if search.symbols:
        all_spans = _spans(index, {(repo, match.path) for repo, match in matches})

        def in_symbol(repo: str, match: regex.Match) -> bool:
            return any(
                s.line <= match.line <= s.end_line and _symbol_matches(s.symbol, search.symbols)
                for s in all_spans.get((repo, match.path), ())
            )

        matches = [(repo, match) for repo, match in matches if in_symbol(repo, match)]
    matches.sort(key=lambda item: (item[0], item[1].path, item[1].line))
    # Definitions first (a pattern for a name usually wants where it is defined), then path order.
    ranked = sorted(matches, key=lambda item: 0 if _DEFINITION_LINE.match(item[1].text) else 1)
    chosen = _spread(ranked, limit, lambda item: (item[0], item[1].path))

    def enclosing(repo: str, path: str, line: int) -> SymbolSpan | None:
        inside = index.enclosing_spans(file_key(repo, path), line)
        return min(inside, key=lambda s: s.end_line - s.line) if inside else None

    hits = []
    for rank, (repo, match) in enumerate(chosen):
        span = enclosing(repo, match.path, match.line)
        context = [match.context[n] for n in range(match.line - 1, match.line + 2) if n in match.context]
        hits.append(
            Hit(
                repo=repo,
                path=match.path,
                line=match.line,
                end_line=match.line,
                symbol=span.symbol if span else None,
                kind="match",
                language=detect(match.path),
                score=round(1.0 / (rank + 1), 5),
                snippet=_snippet(context or [match.text]),
            )
        )
    note = None
    if outcome.timed_out:
        note = f"the pattern search stopped after {settings.search.regex_timeout:g}s; results may be incomplete"
    elif outcome.truncated:
        note = f"the pattern matched more than {cap} lines; showing the first ones"
    if not hits and outcome.timed_out:
        return SearchResult(error=note, code="timeout", kinds=["regex"])
    return SearchResult(hits=hits, kinds=["regex"], note=note)


def _candidate_files(
    index: CodeIndex, pattern: str, names: list[str], roots: list[Path], case_sensitive: bool | None = None
) -> list[str] | None:
    """The only files the pattern can match in; None: search the repositories' trees. First from the
    literal text it fixes and the files' trigram bitmaps (see ``grams``), else from the whole words it
    fixes and the chunks' words (see ``regex.literal_words``; files whose chunks miss some of their
    text are then always searched). Files are read as indexed: a file changed since is found once
    re-indexed."""
    found: set[tuple[str, str]] | None = None
    runs = regex.literal_runs(pattern, case_sensitive)
    if runs is not None:
        found = index.files_with_grams([grams.buckets(group) for group in runs], names)
    if found is None:
        found = _files_with_words(index, pattern, names)
    if found is None:
        return None
    where = {name: str(root).rstrip(os.sep) + os.sep for name, root in zip(names, roots, strict=True)}
    return [where[repo] + path for repo, path in sorted(found)]


def _files_with_words(index: CodeIndex, pattern: str, names: list[str]) -> set[tuple[str, str]] | None:
    groups = regex.literal_words(pattern)
    if groups is None:
        return None
    tokens = []
    for words in groups:
        analyzed = [token for word in words for token in index.words.analyze(word)]
        if not analyzed:
            return None
        tokens.append(list(dict.fromkeys(analyzed)))
    found = index.files_with_words(tokens, names)
    if found is None:
        return None
    for name in names:
        found.update((name, path) for path in index.incomplete_paths(name))
    return found


def _spans(index: CodeIndex, files: set[tuple[str, str]]) -> dict[tuple[str, str], list[SymbolSpan]]:
    if not files:
        return {}
    found: dict[tuple[str, str], list[SymbolSpan]] = defaultdict(list)
    for repo, path, span in index.symbol_spans_for([file_key(repo, path) for repo, path in files]):
        found[(repo, path)].append(span)
    return found
