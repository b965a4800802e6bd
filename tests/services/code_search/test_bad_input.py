"""Hostile searches: catastrophic regular expressions answer with results or a clear note, never hang
(ripgrep's linear-time engine); path filters that try to leave the repository (``../``, absolute paths)
and symlinks inside an indexed repository that point outside never make a file outside it read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.common.api_keys import create_key
from services.code_search import regex
from services.code_search.api import router
from services.code_search.engine import index_repository, search

OUTSIDE_MARKER = "outside_secret_canary_4711"
CATASTROPHIC = ["(a+)+$", "(a|aa)+$", "(x+x+)+y", "(.*a){20}", "^(([a-z])+.)+[A-Z]([a-z])+$", "(\\w+\\s?)*$",
                "(a*)*b", "((a+)|(b+))*c"]


@pytest.fixture
def hostile_repo(sample_repo: Path, tmp_path: Path) -> Path:
    """The sample repository with symlinks inside it to a directory and a file outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secrets.py").write_text(f"def leaked():\n    return '{OUTSIDE_MARKER}'\n")
    (outside / "passwd").write_text(f"root:x:0:0:{OUTSIDE_MARKER}:/root:/bin/sh\n")
    os.symlink(outside, sample_repo / "linked_dir")
    os.symlink(outside / "secrets.py", sample_repo / "linked_file.py")
    os.symlink("../outside/passwd", sample_repo / "etc_passwd.py")
    # A long line of 'a's: the input on which backtracking engines blow up on (a+)+$.
    # (Short lines around them keep the file under the indexer's minified-file threshold.)
    long_lines = "# " + "a" * 3000 + "\n" + "# " + "a" * 3000 + "!\n"
    (sample_repo / "aaaa.py").write_text(long_lines + "".join(f"value_{n} = {n}\n" for n in range(40)))
    return sample_repo


@pytest.fixture
def client(database: str, hostile_repo: Path) -> TestClient:
    summary = index_repository(hostile_repo)
    assert summary.skipped.get("symlink", 0) == 3, summary.skipped
    app = FastAPI()
    app.include_router(router)
    return TestClient(app, headers={"X-API-Key": create_key("bad-input-test")})


def _texts(body: dict[str, object]) -> str:
    return repr(body)


def test_symlinks_out_of_the_repository_are_never_read(client: TestClient, hostile_repo: Path) -> None:
    queries = [
        ("question", "leaked"), ("question", f"{OUTSIDE_MARKER}"), ("pattern", OUTSIDE_MARKER),
        ("pattern", "root:x:0"), ("question", "path:../../etc/passwd root"), ("pattern", "path:/etc/passwd root"),
        ("question", "path:linked_dir leaked"), ("pattern", f"path:linked_dir/ {OUTSIDE_MARKER}"),
        ("pattern", f"path:{hostile_repo.parent}/outside {OUTSIDE_MARKER}"), ("question", "path:/ leaked"),
        ("pattern", "path:..%2F..%2Fetc root"), ("question", "lang:python path:~/ leaked"),
    ]
    for mode, query in queries:
        response = client.post("/api/v1/search", json={"query": query, "mode": mode})
        assert response.status_code in (200, 400), (query, response.text)
        body = response.json()
        assert OUTSIDE_MARKER not in _texts(body), (query, body)
        for hit in body.get("hits", []):
            assert not hit["path"].startswith(("/", "..")) and ".." not in hit["path"].split("/"), hit
            assert (hostile_repo / hit["path"]).resolve().is_relative_to(hostile_repo.resolve()), hit

    # ripgrep itself, below the engine's own checks, does not follow the links either.
    outcome = regex.search(OUTSIDE_MARKER, [hostile_repo], max_matches=100, timeout=10, max_filesize=1 << 20)
    assert outcome.matches == [] and outcome.error is None


def test_catastrophic_patterns_answer_with_results_or_a_note(client: TestClient) -> None:
    for pattern in CATASTROPHIC:
        response = client.post("/api/v1/search", json={"query": pattern, "mode": "pattern"})
        assert response.status_code in (200, 400), (pattern, response.text)
        body = response.json()
        if response.status_code == 400:
            assert body["detail"]
        else:
            # Answered in full, or with a sentence saying the search stopped: never left hanging.
            assert body["error"] is None or "stopped after" in body["error"], (pattern, body)
    # Those that match the long lines of 'a's are found (linear time: no timeout on the way).
    for pattern in ("(a+)+$", "(a|aa)+$", "a(a+)+!"):
        found = client.post("/api/v1/search", json={"query": pattern, "mode": "pattern"}).json()
        assert any(hit["path"] == "aaaa.py" for hit in found["hits"]), (pattern, found)


def test_a_regex_timeout_is_a_clear_note(database: str, hostile_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import apply_env

    index_repository(hostile_repo)
    apply_env(monkeypatch, SEARCH_REGEX_TIMEOUT="0.000001")
    result = search("(.*a){12}", mode="pattern")
    if result.error:  # the (tiny) timeout struck before any match: a reason, not an exception
        assert "stopped after" in result.error or "invalid" in result.error
    else:
        assert result.hits


@given(query=st.one_of(
    st.text(max_size=120),
    st.builds(lambda f, v: f"{f}:{v} x", st.sampled_from(["path", "repo", "lang", "sym", "re", "case", "-path"]),
              st.text(max_size=40)),
    st.sampled_from([*CATASTROPHIC, "[", "(", "\\", "a{99999}", "(?P<x>", "\\p{Unknown}", "x" * 5000]),
), mode=st.sampled_from(["question", "pattern"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_query_gets_hits_or_a_reason(client: TestClient, query: str, mode: str) -> None:
    response = client.post("/api/v1/search", json={"query": query, "mode": mode})
    assert response.status_code in (200, 400, 422), (query, response.status_code, response.text)
    body = response.json()
    if response.status_code != 200:
        assert body["detail"]
    assert OUTSIDE_MARKER not in _texts(body)
