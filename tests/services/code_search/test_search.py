"""Search: questions (symbols + BM25 fused), identifiers, patterns through ripgrep, filters, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.code_search.engine import index_repository, search
from services.code_search.regex import rg_binary
from tests.conftest import apply_env


@pytest.fixture
def indexed(database: str, sample_repo: Path) -> Path:
    index_repository(sample_repo)
    return sample_repo


def test_the_webhook_signature_question_finds_the_verifier_first(indexed: Path) -> None:
    result = search("where is the webhook signature verified?")
    assert result.error is None
    first = result.hits[0]
    assert (first.repo, first.path, first.line, first.end_line) == ("sample_repo", "webhooks/security.py", 22, 31)
    assert (first.symbol, first.kind, first.language) == ("verify_twilio_signature", "function", "python")
    assert first.snippet.startswith("def verify_twilio_signature(")
    assert "X-Twilio-Signature" in first.snippet
    assert first.location == "sample_repo/webhooks/security.py:22"
    assert result.kinds == ["symbol", "keyword"]
    assert result.took_ms > 0


def test_the_session_expiry_question_finds_the_session_store(indexed: Path) -> None:
    hits = search("how do sessions expire?").hits
    assert hits[0].path == "sessions/store.py"
    assert {"SessionStore.expire", "Session.is_expired"} <= {h.symbol for h in hits[:3]}


@pytest.mark.parametrize(
    ("question", "path", "line", "symbol"),
    [
        ("where is process_webhook?", "webhooks/handlers.py", 47, "process_webhook"),
        ("what does SessionStore.expire return", "sessions/store.py", 42, "SessionStore.expire"),
        ("`hash_update`", "native/hash.c", 21, "hash_update"),
        ("LruCache::evict", "native/cache.cpp", 31, "relay.LruCache.evict"),
        ("how does RateLimiter.Allow work", "server/ratelimit.go", 23, "RateLimiter.Allow"),
        ("withRetry", "web/src/api.js", 43, "withRetry"),
    ],
)
def test_identifiers_in_a_question_rank_their_definition_first(
    indexed: Path, question: str, path: str, line: int, symbol: str
) -> None:
    first = search(question).hits[0]
    assert (first.path, first.line, first.symbol) == (path, line, symbol)


def test_one_file_does_not_crowd_out_the_others(indexed: Path) -> None:
    hits = search("session", limit=8).hits
    assert len(hits) == 8
    per_file: dict[str, int] = {}
    for hit in hits:
        per_file[hit.path] = per_file.get(hit.path, 0) + 1
    assert max(per_file.values()) <= 2
    assert len(per_file) >= 4


def test_snippets_are_phone_sized(indexed: Path) -> None:
    for query in ("webhook signature", "sessions", "rate limit", "deployment"):
        for hit in search(query, limit=10).hits:
            lines = hit.snippet.splitlines()
            assert 1 <= len(lines) <= 6, hit
            assert all(len(line) <= 120 for line in lines), hit


def test_text_chunks_point_at_their_best_line(indexed: Path) -> None:
    hits = search("idle_timeout_seconds").hits
    config = next(h for h in hits if h.path == "config/settings.yaml")
    assert config.line == 5 and config.kind == "text" and "idle_timeout_seconds: 1800" in config.snippet


def test_pattern_search_returns_match_lines_with_their_enclosing_symbol(indexed: Path) -> None:
    result = search(r"hmac\.\w+\(", mode="pattern")
    assert result.error is None and result.kinds == ["regex"]
    found = {(h.path, h.line, h.symbol) for h in result.hits}
    assert found == {
        ("webhooks/security.py", 18, "_compute_signature"),
        ("webhooks/security.py", 31, "verify_twilio_signature"),
    }
    hit = next(h for h in result.hits if h.line == 31)
    assert hit.kind == "match" and hit.end_line == 31
    assert "return hmac.compare_digest(expected, signature)" in hit.snippet


def test_pattern_definitions_come_first(indexed: Path) -> None:
    hits = search("verify_twilio_signature", mode="pattern").hits
    assert (hits[0].path, hits[0].line) == ("webhooks/security.py", 22)
    assert {(h.path, h.line) for h in hits} == {("webhooks/security.py", 22), ("webhooks/security.py", 36)}


def test_pattern_search_reads_only_indexed_files(indexed: Path) -> None:
    # debug.log, build/out.py (ignored), .env (secret), node_modules and minified files all match too.
    for pattern in ("verify_twilio_signature", "secret-token", "leftPad", "relay", "function f1"):
        for hit in search(pattern, mode="pattern", limit=50).hits:
            assert hit.path not in {"debug.log", "build/out.py", ".env", "web/static/bundle.js"}
            assert not hit.path.startswith(("web/node_modules/", "web/static/"))


def test_an_invalid_pattern_is_explained(indexed: Path) -> None:
    result = search("def (unclosed", mode="pattern")
    assert result.hits == [] and result.code == "invalid_pattern"
    assert result.error is not None and result.error.startswith("invalid pattern: ") and "unclosed" in result.error
    lookaround = search("(?<=def )verify", mode="pattern")
    assert lookaround.error is not None and "look-around" in lookaround.error


def test_a_catastrophic_pattern_returns(indexed: Path) -> None:
    (indexed / "evil.txt").write_text("a" * 5000 + "b\n")
    index_repository(indexed)
    result = search("(a+)+$", mode="pattern")
    assert result.error is None or "timed out" in result.error or "stopped" in result.error


def test_pattern_output_is_capped_with_a_note(indexed: Path) -> None:
    noisy = indexed / "noisy"
    noisy.mkdir()
    for number in range(40):
        (noisy / f"log{number}.txt").write_text("".join(f"noise line {i}\n" for i in range(25)))
    index_repository(indexed)
    result = search("noise line", mode="pattern", limit=5)
    assert len(result.hits) == 5 and len({h.path for h in result.hits}) >= 3
    assert result.note is not None and "more than" in result.note


def test_the_pattern_timeout_is_enforced(indexed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, SEARCH_REGEX_TIMEOUT="0")
    result = search("verify_twilio_signature", mode="pattern")
    assert result.hits == [] and result.code == "timeout"
    assert result.error is not None and "stopped after" in result.error


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_an_empty_query_is_refused(indexed: Path, query: str) -> None:
    for mode in ("question", "pattern"):
        result = search(query, mode=mode)
        assert result.hits == [] and result.code == "empty_query" and result.error


def test_a_question_of_only_stopwords_is_refused(indexed: Path) -> None:
    result = search("how does it work?")
    assert result.code == "empty_query" and result.error is not None and "nothing to search" in result.error


def test_a_huge_query_is_refused(indexed: Path) -> None:
    result = search("x" * 5000)
    assert result.code == "query_too_long" and result.error is not None and "too long" in result.error


def test_the_repository_filter_limits_results(indexed: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "verify.py").write_text('def verify_twilio_signature(token):\n    """Other copy."""\n')
    index_repository(other, name="other")
    assert {h.repo for h in search("verify_twilio_signature", limit=20).hits} == {"sample_repo", "other"}
    only = search("verify_twilio_signature", repos=["other"], limit=20).hits
    assert only and {h.repo for h in only} == {"other"}
    patterns = search("verify_twilio_signature", repos=["other"], mode="pattern").hits
    assert [(h.repo, h.path, h.line) for h in patterns] == [("other", "verify.py", 1)]
    unknown = search("verify", repos=["nope"])
    assert unknown.code == "unknown_repo" and unknown.error is not None and "nope" in unknown.error


def test_searching_before_anything_is_indexed_says_so(database: str) -> None:
    result = search("where is the webhook signature verified?")
    assert result.hits == [] and result.code == "no_index" and result.error == "no repository is indexed yet"


def test_limit_is_respected(indexed: Path) -> None:
    assert len(search("session", limit=3).hits) == 3
    assert len(search("session", limit=0).hits) == 1


def test_the_ripgrep_binary_comes_from_the_wheel() -> None:
    assert Path(rg_binary()).name == "rg"
