"""Filters, stack traces and grouping through ``search`` (the parser WhatsApp, the CLI and the API share)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.code_search.engine import index_repository, search


@pytest.fixture
def indexed(database: str, sample_repo: Path, tmp_path: Path) -> Path:
    index_repository(sample_repo)
    other = tmp_path / "other"
    other.mkdir()
    (other / "verify.py").write_text('def verify_twilio_signature(token):\n    """Other copy."""\n')
    index_repository(other, name="other")
    return sample_repo


def test_repo_filter(indexed: Path) -> None:
    hits = search("verify_twilio_signature repo:other", limit=20).hits
    assert hits and {h.repo for h in hits} == {"other"}
    pattern = search("verify_twilio_signature repo:other", mode="pattern").hits
    assert [(h.repo, h.path) for h in pattern] == [("other", "verify.py")]
    unknown = search("verify repo:nope")
    assert unknown.code == "unknown_repo" and unknown.error is not None and "nope" in unknown.error
    # The request's scope and the filter must agree.
    assert search("verify repo:other", repos=["sample_repo"]).code == "unknown_repo"


def test_path_filter(indexed: Path) -> None:
    hits = search("session path:webhooks/", limit=20).hits
    assert hits and all(h.path.startswith("webhooks/") for h in hits)
    go = search("limit path:*.go", limit=20).hits
    assert go and all(h.path.endswith(".go") for h in go)
    excluded = search("session -path:sessions/", limit=20).hits
    assert excluded and not any(h.path.startswith("sessions/") for h in excluded)
    pattern = search(r"def \w+ path:webhooks/security.py", mode="pattern", limit=20).hits
    assert pattern and {h.path for h in pattern} == {"webhooks/security.py"}


def test_lang_filter(indexed: Path) -> None:
    hits = search("rate limit lang:go", limit=20).hits
    assert hits and {h.language for h in hits} == {"go"}
    pattern = search("func|def lang:golang", mode="pattern", limit=50).hits
    assert pattern and {h.path.rsplit(".", 1)[-1] for h in pattern} == {"go"}
    assert search("x lang:klingon").code == "invalid_filter"


def test_sym_filter(indexed: Path) -> None:
    first = search("sym:SessionStore.expire").hits[0]
    assert (first.path, first.line, first.symbol) == ("sessions/store.py", 42, "SessionStore.expire")
    wild = search("sym:verify_* repo:sample_repo", limit=20).hits
    assert wild and all(h.symbol and h.symbol.split(".")[-1].startswith("verify_") for h in wild)
    # With a pattern: only lines inside that symbol.
    inside = search(r"re:hmac\.\w+ sym:verify_twilio_signature").hits
    assert [(h.path, h.line) for h in inside] == [("webhooks/security.py", 31)]


def test_re_filter_and_slashes(indexed: Path) -> None:
    result = search(r're:"hmac\.\w+\(" path:webhooks/')
    assert result.kinds == ["regex"] and {(h.path, h.line) for h in result.hits} == {
        ("webhooks/security.py", 18), ("webhooks/security.py", 31),
    }
    slashed = search(r"/hmac\.\w+\(/")
    assert {(h.path, h.line) for h in slashed.hits} == {(h.path, h.line) for h in result.hits}
    bad = search("re:(unclosed")
    assert bad.code == "invalid_pattern" and bad.error is not None and "unclosed" in bad.error


def test_case_filter(indexed: Path) -> None:
    smart = search("sessionstore", mode="pattern", limit=50).hits
    assert any("SessionStore" in h.snippet for h in smart)
    strict = search("sessionstore case:yes", mode="pattern", limit=50).hits
    assert strict == []
    loose = search("SESSIONSTORE case:no", mode="pattern", limit=50).hits
    assert {(h.path, h.line) for h in loose} == {(h.path, h.line) for h in smart}
    # In questions: the identifier must appear as written.
    exact = search("SessionStore case:yes", limit=20).hits
    assert exact and all("SessionStore" in h.snippet or h.symbol == "SessionStore" for h in exact[:1])
    assert search("SESSIONSTORE case:yes", limit=20).hits == []


def test_path_filters_never_read_outside_the_repository(indexed: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("verify_twilio_signature outside the repository\n")
    for query in ("re:outside path:../secret.txt", "outside path:../../secret.txt", "re:outside path:~/x"):
        result = search(query)
        assert result.code == "invalid_filter" and result.hits == [] and "leaves the repository" in (result.error or "")
    for query in (f"re:outside path:{outside}", "re:root path:/etc/passwd"):
        assert search(query).hits == []
    (indexed / "escape").symlink_to(tmp_path)
    index_repository(indexed)
    assert search("re:outside path:escape/**").hits == []


def test_a_python_traceback_finds_the_frame_that_raised(indexed: Path) -> None:
    trace = (
        "getting this on every webhook:\nTraceback (most recent call last):\n"
        '  File "/app/webhooks/handlers.py", line 49, in process_webhook\n'
        "    return handler.handle(form, header)\n"
        '  File "/app/webhooks/security.py", line 31, in verify_twilio_signature\n'
        "    return hmac.compare_digest(expected, signature)\n"
        "TypeError: a bytes-like object is required, not 'str'"
    )
    hits = search(trace, limit=5).hits
    assert (hits[0].path, hits[0].symbol) == ("webhooks/security.py", "verify_twilio_signature")
    assert ("webhooks/handlers.py", "process_webhook") in {(h.path, h.symbol) for h in hits}


def test_a_js_stack_frame_finds_its_function(indexed: Path) -> None:
    trace = "fetch failed\n    at withRetry (/srv/app/web/src/api.js:45:11)\n    at main (/srv/app/web/src/x.js:3:1)"
    first = search(trace).hits[0]
    assert (first.path, first.symbol) == ("web/src/api.js", "withRetry")


def test_results_are_grouped_per_file(indexed: Path) -> None:
    result = search("session", limit=8)
    seen: list[str] = []
    for hit in result.hits:
        if not seen or seen[-1] != hit.path:
            assert hit.path not in seen, "a file's hits must be adjacent"
            seen.append(hit.path)
    assert [g.path for g in result.groups] == seen
    assert sum(len(g.hits) for g in result.groups) == len(result.hits)
