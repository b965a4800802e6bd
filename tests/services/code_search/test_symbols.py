"""Symbols per language from tree-sitter: names, qualified names, kinds, line ranges, docs; chunks."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.code_search.chunker import chunk_file
from services.code_search.languages import detect
from services.code_search.pipeline import process_file
from services.code_search.symbols import Symbol, extract
from services.code_search.walker import Candidate
from tests.services.code_search.conftest import SAMPLE


def symbols_of(path: str) -> dict[str, Symbol]:
    data = (SAMPLE / path).read_bytes()
    language = detect(path)
    assert language is not None
    return {s.qualified: s for s in extract(data, language)}


def spans(path: str) -> dict[str, tuple[str, int, int]]:
    return {name: (s.kind, s.line, s.end_line) for name, s in symbols_of(path).items()}


def test_python_classes_methods_docstrings_and_decorators() -> None:
    found = symbols_of("sessions/store.py")
    assert {name: (s.kind, s.line, s.end_line) for name, s in found.items()} == {
        "Session": ("class", 12, 25),
        "Session.append": ("method", 19, 21),
        "Session.is_expired": ("method", 23, 25),
        "SessionStore": ("class", 28, 51),
        "SessionStore.__init__": ("method", 31, 33),
        "SessionStore.get_or_create": ("method", 35, 40),
        "SessionStore.expire": ("method", 42, 48),
        "SessionStore.__len__": ("method", 50, 51),
    }
    session = found["Session"]
    assert session.start_line == 11  # the @dataclass line belongs to it
    assert session.doc == "One conversation with one sender."
    expire = found["SessionStore.expire"]
    assert expire.signature == "def expire(self, now: float | None = None) -> int"
    assert expire.doc.startswith("Remove every session idle")
    assert found["SessionStore.expire"].parent == list(found).index("SessionStore")


def test_python_function_signature_and_first_docstring_paragraph() -> None:
    verify = symbols_of("webhooks/security.py")["verify_twilio_signature"]
    assert (verify.kind, verify.line, verify.end_line) == ("function", 22, 31)
    assert verify.signature.startswith("def verify_twilio_signature(auth_token: str")
    assert verify.doc == "Verifies the X-Twilio-Signature header of an incoming webhook."


def test_javascript_functions_classes_methods_and_arrow_functions() -> None:
    found = symbols_of("web/src/api.js")
    assert spans("web/src/api.js") == {
        "buildUrl": ("function", 10, 12),
        "ApiClient": ("class", 15, 40),
        "ApiClient.constructor": ("method", 16, 19),
        "ApiClient.request": ("method", 21, 35),
        "ApiClient.sendMessage": ("method", 37, 39),
        "withRetry": ("function", 43, 55),
    }
    assert found["buildUrl"].doc == "Build the absolute URL of an API endpoint."
    assert found["buildUrl"].start_line == 7  # its JSDoc block
    assert found["withRetry"].signature == "export const withRetry = async (operation, attempts = 3)"


def test_typescript_interfaces_enums_types_and_classes() -> None:
    assert spans("web/src/session.ts") == {
        "SessionInfo": ("interface", 3, 7),
        "SessionState": ("enum", 9, 12),
        "SessionListener": ("type", 14, 14),
        "SessionManager": ("class", 17, 36),
        "SessionManager.constructor": ("method", 20, 20),
        "SessionManager.touch": ("method", 23, 27),
        "SessionManager.stateOf": ("method", 29, 35),
        "formatSender": ("function", 38, 40),
    }


def test_tsx_components() -> None:
    found = spans("web/src/components/Chat.tsx")
    assert found["ChatTranscript"] == ("function", 9, 20)
    assert found["EmptyChat"] == ("function", 22, 22)
    assert found["ChatProps"][0] == "interface"


def test_go_functions_methods_with_receivers_and_types() -> None:
    found = symbols_of("server/main.go")
    assert spans("server/main.go") == {
        "Store": ("interface", 11, 13),
        "Server": ("struct", 16, 20),
        "NewServer": ("function", 23, 29),
        "Server.ServeHTTP": ("method", 32, 39),
        "main": ("function", 41, 44),
    }
    assert found["Server"].signature == "type Server struct"
    assert found["Server.ServeHTTP"].doc == "ServeHTTP applies the rate limit and forwards the request."
    assert spans("server/ratelimit.go")["RateLimiter.Allow"] == ("method", 23, 32)


def test_java_classes_constructors_methods_and_nested_types() -> None:
    found = symbols_of("android/src/main/java/com/example/relay/WebhookClient.java")
    assert {n: (s.kind, s.line, s.end_line) for n, s in found.items()} == {
        "WebhookClient": ("class", 12, 38),
        "WebhookClient.WebhookClient": ("constructor", 17, 20),
        "WebhookClient.send": ("method", 25, 32),
        "WebhookClient.Listener": ("interface", 35, 37),
        "WebhookClient.Listener.onStatus": ("method", 36, 36),
    }
    assert found["WebhookClient.send"].doc == "Sends one form-encoded callback and returns the HTTP status."


def test_c_functions_structs_and_typedefs() -> None:
    assert spans("native/hash.c") == {
        "hash_stats": ("struct", 7, 10),
        "hash_init": ("function", 15, 18),
        "hash_update": ("function", 21, 29),
        "hash_final": ("function", 31, 33),
        "hash_name": ("function", 35, 37),
    }
    assert spans("native/hash.h") == {"hash_ctx": ("struct", 7, 10)}
    assert symbols_of("native/hash.c")["hash_init"].doc == "Reset a context to the FNV offset basis."


def test_cpp_namespaces_classes_and_out_of_line_methods() -> None:
    assert spans("native/cache.cpp") == {
        "relay": ("namespace", 3, 38),
        "relay.LruCache.LruCache": ("method", 5, 5),
        "relay.LruCache.get": ("method", 8, 16),
        "relay.LruCache.put": ("method", 18, 28),
        "relay.LruCache.evict": ("method", 31, 36),
        "clamp_value": ("function", 41, 43),
    }
    header = spans("native/cache.hpp")
    assert header["relay.LruCache"] == ("class", 11, 23)
    assert header["relay.LruCache.size"] == ("method", 16, 16)
    assert symbols_of("native/cache.cpp")["clamp_value"].start_line == 40  # template <...> line


def test_rust_items_and_impl_methods() -> None:
    found = symbols_of("tools/indexer.rs")
    assert spans("tools/indexer.rs") == {
        "MessageIndex": ("struct", 6, 8),
        "Tokenize": ("trait", 11, 13),
        "str.tokens": ("method", 16, 18),
        "MessageIndex.new": ("method", 23, 25),
        "MessageIndex.add": ("method", 28, 32),
        "Mode": ("enum", 35, 38),
        "main": ("function", 40, 43),
    }
    assert found["MessageIndex.add"].doc == "Adds every word of a message to the index."


def test_ruby_modules_classes_and_methods() -> None:
    found = symbols_of("scripts/deploy.rb")
    assert spans("scripts/deploy.rb") == {
        "Relay": ("module", 2, 27),
        "Relay.Deployer": ("class", 4, 26),
        "Relay.Deployer.initialize": ("method", 5, 7),
        "Relay.Deployer.deploy": ("method", 10, 15),
        "Relay.Deployer.from_env": ("method", 17, 19),
        "Relay.Deployer.push": ("method", 23, 25),
    }
    assert found["Relay.Deployer"].signature == "class Deployer"
    assert found["Relay.Deployer.deploy"].doc.startswith("Deploys the release to each host")


def test_nested_functions_are_qualified_by_their_enclosing_function() -> None:
    source = b"def outer():\n    def inner():\n        return 1\n    return inner\n"
    found = {s.qualified: s.kind for s in extract(source, "python")}
    assert found == {"outer": "function", "outer.inner": "function"}


def test_broken_source_still_yields_the_symbols_it_can() -> None:
    source = b"def ok():\n    return 1\n\ndef broken(:\n    pass\n\nclass Fine:\n    pass\n"
    names = {s.qualified for s in extract(source, "python")}
    assert {"ok", "Fine"} <= names


def test_a_class_chunk_keeps_member_heads_and_members_get_their_own_chunks() -> None:
    path = "sessions/store.py"
    text = (SAMPLE / path).read_text()
    chunks = chunk_file(text, "python", extract(text.encode(), "python"))
    by_symbol = {c.symbol: c for c in chunks if c.is_def}
    store = by_symbol["SessionStore"]
    assert "def expire(self, now: float | None = None) -> int:" in store.text
    assert "del self._sessions[key]" not in store.text  # expire's body lives in its own chunk
    assert "del self._sessions[key]" in by_symbol["SessionStore.expire"].text
    assert (store.line, store.end) == (28, 51)
    code = [c for c in chunks if c.kind == "code"]
    assert code and "DEFAULT_IDLE_SECONDS = 30 * 60" in code[0].text


def test_long_functions_continue_in_further_chunks() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(400))
    text = f"def long():\n{body}\n"
    chunks = chunk_file(text, "python", extract(text.encode(), "python"))
    parts = [c for c in chunks if c.symbol == "long"]
    assert len(parts) == 3 and [p.is_def for p in parts] == [True, False, False]
    assert parts[0].line == 1 and parts[1].start == parts[0].start + 150


def test_markdown_is_cut_by_headings() -> None:
    text = (SAMPLE / "docs/architecture.md").read_text()
    sections = chunk_file(text, "markdown", [])
    assert [(c.symbol, c.start) for c in sections] == [
        ("Architecture", 1),
        ("Request flow", 3),
        ("Sessions", 9),
        ("Deployment", 14),
    ]


@pytest.mark.parametrize(
    ("path", "language"),
    [("a/b.py", "python"), ("x.tsx", "tsx"), ("Dockerfile", "dockerfile"), ("c.hpp", "cpp"), ("n.unknown", None)],
)
def test_language_detection(path: str, language: str | None) -> None:
    assert detect(path) == language


def test_every_fixture_source_file_parses_without_losing_lines() -> None:
    for path in SAMPLE.rglob("*"):
        language = detect(path.name)
        if not path.is_file() or language is None or "node_modules" in path.parts or "static" in path.parts:
            continue
        text = path.read_text()
        for symbol in extract(path.read_bytes(), language):
            assert 1 <= symbol.start_line <= symbol.line <= symbol.end_line <= text.count("\n") + 1, symbol


def test_cpp_headers_with_a_c_extension_are_parsed_as_cpp(tmp_path: Path) -> None:
    header = tmp_path / "widget.h"
    header.write_text("namespace ui {\nclass Widget {\npublic:\n    void draw() { }\n};\n}\n")
    candidate = Candidate("widget.h", str(header), header.stat().st_size, 0)
    result = process_file("repo", candidate)
    assert result.language == "cpp" and result.symbols == 3
    assert process_file("repo", Candidate("native/hash.h", str(SAMPLE / "native/hash.h"), 1, 0)).language == "c"
