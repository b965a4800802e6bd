"""The search language: filters, globs, stack-trace frames and the errors a user sees."""

from __future__ import annotations

import re

import pytest

from services.code_search.query import parse, stack_frames
from services.code_search.syntax import QueryError, glob_regex, parse_search


def test_free_text_and_every_filter_are_separated() -> None:
    parsed = parse_search('session expiry repo:backend path:"src/**/*.py" lang:py sym:Store.expire case:yes')
    assert parsed.text == "session expiry"
    assert parsed.repos == ["backend"]
    assert parsed.paths == ["src/**/*.py"]
    assert parsed.languages == ["python"]
    assert parsed.symbols == ["Store.expire"]
    assert parsed.case is True and parsed.pattern is None


@pytest.mark.parametrize(
    ("query", "pattern", "text"),
    [
        (r're:"def \w+_signature" path:webhooks/', r"def \w+_signature", ""),
        (r"re:hmac\.\w+ lang:python", r"hmac\.\w+", ""),
        (r"/verify_\w+/ lang:go", r"verify_\w+", ""),
        (r"/a\/b/", r"a\/b", ""),
    ],
)
def test_patterns_come_from_re_or_slashes(query: str, pattern: str, text: str) -> None:
    parsed = parse_search(query)
    assert parsed.pattern == pattern and parsed.text == text


def test_slashes_in_a_sentence_or_a_path_are_not_a_pattern() -> None:
    assert parse_search("what does /usr/lib/ hold").pattern is None
    assert parse_search("webhooks/security.py").pattern is None


def test_in_pattern_mode_the_text_is_the_pattern() -> None:
    parsed = parse_search(r"def \w+_signature path:webhooks/ case:no", mode="pattern")
    assert parsed.text == r"def \w+_signature" and parsed.case is False and parsed.paths == ["webhooks/"]


def test_unknown_prefixes_stay_text() -> None:
    parsed = parse_search("std::vector http://example.com key: value")
    assert parsed.text == "std::vector http://example.com key: value" and not parsed.has_filters


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("src/**/*.py", ["src/a.py", "src/x/y/b.py", "pkg/src/c.py"], ["src/a.pyc", "lib/a.py"]),
        ("/src/*.py", ["src/a.py"], ["pkg/src/a.py", "src/x/b.py"]),
        ("*.go", ["main.go", "server/main.go"], ["main.gox", "go.mod"]),
        ("orm", ["lib/sqlalchemy/orm/session.py", "orm.py"], ["lib/sql/core.py"]),
        ("webhooks/", ["webhooks/security.py"], ["web/hooks.py"]),
        ("*.{ts,tsx}", ["web/a.ts", "b.tsx"], ["c.js"]),
        ("test_[ab].py", ["tests/test_a.py"], ["tests/test_c.py"]),
        ("a+b(c).py", ["x/a+b(c).py"], ["x/aab(c).py"]),
    ],
)
def test_globs(glob: str, matches: list[str], misses: list[str]) -> None:
    regex = glob_regex(glob)
    for path in matches:
        assert re.fullmatch(regex, path), (glob, path)
    for path in misses:
        assert not re.fullmatch(regex, path), (glob, path)


@pytest.mark.parametrize("value", ["../etc/passwd", "src/../../x", "~/secrets", "C:/Windows", "a\\b", "..", "./../x"])
def test_path_filters_cannot_leave_the_repository(value: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_search(f"token path:{value}")
    assert caught.value.code == "invalid_filter"


def test_an_absolute_path_is_anchored_at_the_repository_root() -> None:
    regex = glob_regex("/etc/passwd")
    assert re.fullmatch(regex, "etc/passwd") and not re.fullmatch(regex, "x/etc/passwd")


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ("", "empty_query", "empty"),
        ("path:src lang:go", "empty_query", "nothing to search"),
        ("x" * 1001, "query_too_long", "too long"),
        ("lang:klingon hello", "invalid_filter", "unknown language"),
        ("hello case:maybe", "invalid_filter", "case:yes"),
        ("hello path:", "invalid_filter", "needs a value"),
        ("hello path:src/[ab", "invalid_filter", "unclosed ["),
        ("hello path:{a,b", "invalid_filter", "unclosed {"),
        ("sym:foo-bar", "invalid_filter", "not a name"),
        ("re:", "invalid_pattern", "needs a pattern"),
        ("re:a re:b", "invalid_pattern", "one re:"),
        ("re:abc and some words", "invalid_pattern", "no other words"),
        ("-lang:go x", "invalid_filter", "only -path"),
        (" ".join(["repo:a"] * 21) + " x", "invalid_filter", "too many filters"),
    ],
)
def test_bad_queries_are_explained(query: str, code: str, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_search(query)
    assert caught.value.code == code and words in caught.value.message


def test_python_traceback_frames_are_pulled_out() -> None:
    trace = (
        "it crashes:\nTraceback (most recent call last):\n"
        '  File "/srv/.venv/lib/python3.11/site-packages/sqlalchemy/orm/session.py", line 2306, in execute\n'
        "    return self._execute_internal(\n"
        '  File "<frozen importlib._bootstrap>", line 1, in _load\n'
        '  File "/home/me/proj/webhooks/security.py", line 31, in verify_twilio_signature\n'
        "TypeError: bad operand"
    )
    frames, rest = stack_frames(trace)
    assert [(f.path, f.line, f.function, f.innermost) for f in frames] == [
        ("sqlalchemy/orm/session.py", 2306, "execute", False),
        ("webhooks/security.py", 31, "verify_twilio_signature", True),
    ]
    assert "Traceback" not in rest and "site-packages" not in rest
    parsed = parse(trace)
    assert {"execute", "verify_twilio_signature", "_execute_internal"} <= set(parsed.identifiers)
    assert "self" not in parsed.identifiers and {"webhooks/security.py"} <= set(parsed.paths)


def test_js_java_ruby_and_go_frames() -> None:
    trace = (
        "TypeError: x is undefined\n"
        "    at withRetry (/srv/app/web/src/api.js:43:11)\n"
        "    at async Object.run (file:///srv/app/web/src/session.ts:10:2)\n"
        "    at node:internal/process/task_queues:95:5\n"
        "Exception in thread main\n"
        "    at com.example.relay.WebhookClient.send(WebhookClient.java:42)\n"
        "from /app/scripts/deploy.rb:12:in `deploy'\n"
        "main.handler(0x1)\n\t/app/server/main.go:30 +0x1d\n"
    )
    frames, _rest = stack_frames(trace)
    found = {(f.path, f.line, f.function) for f in frames}
    assert {
        ("src/api.js", 43, "withRetry"),
        ("src/session.ts", 10, "run"),
        ("com/example/relay/WebhookClient.java", 42, "WebhookClient.send"),
        ("scripts/deploy.rb", 12, "deploy"),
        ("server/main.go", 30, ""),
    } <= found
    assert next(f for f in frames if f.function == "withRetry").innermost
