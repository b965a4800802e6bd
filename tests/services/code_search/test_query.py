"""Turning a chat question into identifiers, qualified names, paths and words."""

from __future__ import annotations

from services.code_search.query import parse, split_identifier


def test_split_identifier_handles_snake_camel_and_acronyms() -> None:
    assert split_identifier("process_webhook") == ["process", "webhook"]
    assert split_identifier("SessionStore") == ["session", "store"]
    assert split_identifier("HTTPServer2") == ["http", "server", "2"]
    assert split_identifier("verify-twilio.signature") == ["verify", "twilio", "signature"]


def test_a_plain_question_keeps_content_words_only() -> None:
    parsed = parse("where is the webhook signature verified?")
    assert parsed.words == ["webhook", "signature", "verified"]
    assert parsed.identifiers == [] and parsed.qualified == []


def test_identifiers_are_recognised_by_shape() -> None:
    parsed = parse("what calls process_webhook and how does SessionStore.expire work?")
    assert parsed.qualified == ["SessionStore.expire"]
    assert parsed.identifiers == ["process_webhook", "SessionStore", "expire"]
    assert {"process", "webhook", "session", "store", "expire", "calls"} <= set(parsed.words)


def test_backticks_calls_and_double_colons() -> None:
    parsed = parse("is `flush` called from relay::LruCache::evict or from handle()?")
    assert parsed.identifiers[:1] == ["flush"]
    assert "relay.LruCache.evict" in parsed.qualified
    assert "handle" in parsed.identifiers


def test_paths_are_kept_whole() -> None:
    parsed = parse("what does webhooks/security.py do with store.py?")
    assert parsed.paths == ["webhooks/security.py", "store.py"]
    assert "security" in parsed.words and "webhooks" in parsed.words
    assert "py" not in parsed.words


def test_a_lone_word_is_tried_as_a_name_too() -> None:
    assert parse("tokenize").identifiers == ["tokenize"]
    assert parse("how does it work?").empty
