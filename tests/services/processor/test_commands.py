"""Slash commands: /help /reset /repos /repo /search and unknown ones."""

from __future__ import annotations

import pytest

from libs.common.events import EventType, derived_id
from services.processor import commands
from tests.services.processor.support import (
    ALICE,
    BOB,
    active_sessions,
    add_repo,
    ai_response,
    ask_and_answer,
    deliver,
    new_sid,
    received,
    reply_of,
    say,
    search_of,
    sessions_of,
    turn,
)


def test_help_lists_every_command_in_whatsapp_formatting(database: str) -> None:
    sid = new_sid()
    events = deliver(received(sid, "/help"))
    reply = reply_of(events)
    assert events[0].id == derived_id(sid, EventType.REPLY_READY)
    assert reply.kind == "command" and reply.user_id == ALICE
    assert "*repotalk*" in reply.body
    for name in commands.COMMANDS:
        assert f"`/{name}" in reply.body
    assert "#" not in reply.body  # no Markdown headings on WhatsApp
    stored = turn(sid)
    assert stored is not None and stored.kind == "command" and stored.status == "answered"


def test_commands_are_case_insensitive(database: str) -> None:
    assert "*repotalk*" in reply_of(say("/HELP")).body


@pytest.mark.parametrize("body", ["/frobnicate", "/", "/ help"])
def test_unknown_command_points_at_help(database: str, body: str) -> None:
    reply = reply_of(say(body))
    assert "/help" in reply.body
    assert len(reply.body) < 200


def test_parse_splits_name_and_argument() -> None:
    assert commands.parse("/Repo  api, web ") == commands.Command("repo", "api, web")
    assert commands.parse("/search\ndef  foo") == commands.Command("search", "def  foo")
    assert commands.parse("/export") == commands.Command("export", "")


def test_reset_ends_the_session_and_forgets_history_and_scope(database: str) -> None:
    add_repo("api")
    say("/repo api")
    ask_and_answer("q1", "a1")
    [old] = active_sessions(ALICE)

    reply = reply_of(say("/reset"))
    request = search_of(say("q2"))

    assert "Fresh start" in reply.body
    ended, fresh = sessions_of(ALICE)
    assert (ended.id, ended.end_reason) == (old.id, "reset") and ended.ended_at is not None
    assert fresh.ended_at is None and request.session_id == fresh.id
    assert request.history == [] and request.repos == []


def test_repos_without_any_indexed_repository_says_so(database: str) -> None:
    reply = reply_of(say("/repos"))
    assert "No repositories are indexed" in reply.body


def test_repos_lists_counts_and_scope(database: str) -> None:
    add_repo("api", files=1234, symbols=56789)
    add_repo("web", files=3, symbols=40, status="indexing")

    everything = reply_of(say("/repos")).body
    assert "`api`: 1,234 files, 56,789 symbols" in everything
    assert "`web` _(indexing)_: 3 files, 40 symbols" in everything
    assert "*all repositories*" in everything
    assert "✅" not in everything

    say("/repo web")
    scoped = reply_of(say("/repos")).body
    assert "✅ `web`" in scoped and "✅ `api`" not in scoped
    assert "Scope: *web*" in scoped


def test_repo_sets_the_scope_of_the_next_search(database: str) -> None:
    add_repo("api")
    add_repo("web")
    add_repo("docs")

    reply = reply_of(say("/repo web, API"))  # case-insensitive, comma or space separated
    assert "*web*" in reply.body and "*api*" in reply.body
    assert search_of(say("where is login?")).repos == ["web", "api"]
    assert search_of(say("/search login")).repos == ["web", "api"]

    reply_of(say("/repo all"))
    assert search_of(say("and now?")).repos == []


def test_repo_rejects_unknown_names_and_lists_the_valid_ones(database: str) -> None:
    add_repo("api")
    add_repo("web")
    say("/repo api")

    reply = reply_of(say("/repo api nope"))

    assert "`nope`" in reply.body
    assert "`api`, `web`" in reply.body
    assert search_of(say("question")).repos == ["api"]  # unchanged


def test_repo_with_nothing_indexed(database: str) -> None:
    reply = reply_of(say("/repo api"))
    assert "`api`" in reply.body and "No repositories are indexed" in reply.body


def test_repo_without_a_name_shows_scope_and_usage(database: str) -> None:
    reply = reply_of(say("/repo"))
    assert "Scope: *all repositories*" in reply.body and "/repo NAME" in reply.body


def test_scope_belongs_to_the_user(database: str) -> None:
    add_repo("api")
    say("/repo api", user=ALICE)
    assert search_of(say("q", user=BOB)).repos == []


def test_search_publishes_a_pattern_search(database: str) -> None:
    sid = new_sid()
    events = deliver(received(sid, "/search def verify_signature("))
    request = search_of(events)
    assert events[0].id == derived_id(sid, EventType.SEARCH_REQUESTED)
    assert request.mode == "pattern"
    assert request.query == "def verify_signature("
    assert request.history == []
    stored = turn(sid)
    assert stored is not None and stored.kind == "pattern" and stored.status == "searching"

    reply = reply_of(deliver(ai_response(sid, "3 matches: api/app.py:10 ...")))
    assert reply.kind == "answer" and reply.body.startswith("3 matches")


def test_search_without_a_pattern_gives_usage(database: str) -> None:
    reply = reply_of(say("/search   "))
    assert "/search PATTERN" in reply.body
