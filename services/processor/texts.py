"""Every text the processor sends to a user: short, friendly, phone-sized, WhatsApp formatting
(*bold*, _italic_, `monospace`, ```code```; WhatsApp renders no Markdown headings or links)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

CONFIRM_DELETE_PHRASE = "YES DELETE"


def help_text(idle_minutes: int) -> str:
    return (
        "*repotalk* answers questions about your team's code, with `path:line` citations.\n"
        "\n"
        "Just ask, e.g. _where do we validate the Twilio signature?_\n"
        "\n"
        "*Commands*\n"
        "`/repos` indexed repositories\n"
        "`/repo NAME` ask about NAME only (`/repo api, web` for several, `/repo all` for every one)\n"
        "`/search PATTERN` find code matching a pattern\n"
        "`/reset` start a fresh conversation\n"
        "`/export` get a copy of your data\n"
        "`/delete` erase your data\n"
        "`/help` this message\n"
        "\n"
        "*Filters* (in a question or a `/search`)\n"
        "`repo:NAME` `path:src/**/*.py` `lang:go` `sym:Session.expire` `case:yes`\n"
        "`re:PATTERN` or `/PATTERN/` a regular expression in a question\n"
        "e.g. _session expiry lang:python path:auth/_\n"
        "\n"
        f"After {idle_minutes} minutes of silence I start a fresh conversation (your `/repo` choice stays)."
    )


UNKNOWN_COMMAND = "I don't know `{command}`. Send `/help` to see what I can do."

RESET_DONE = "Fresh start: I forgot our conversation and your `/repo` choice. Ask away!"

MEDIA_ONLY = "I can read text only, sorry. Please type your question."

EMPTY_MESSAGE = "Your message was empty. Type a question about your code, or `/help`."


def too_long(length: int, limit: int) -> str:
    return (
        f"That message is too long for me ({length:,} characters; my limit is {limit:,}). "
        "Please send a shorter question, or search for one line with `/search PATTERN`."
    )


SEARCH_USAGE = "Tell me what to look for: `/search PATTERN`, e.g. `/search def verify_signature`"

APOLOGY = "Sorry, something went wrong while answering that. Please try again in a moment."

EMPTY_ANSWER = "I couldn't put an answer together for that one. Try rephrasing, or `/search` for a name."

# --- repositories ---------------------------------------------------------------------------------

NO_REPOSITORIES = (
    "No repositories are indexed yet, so there is nothing to ask about. "
    "Ask whoever runs repotalk to add one."
)


@dataclass(frozen=True)
class RepoLine:
    name: str
    status: str
    files: int
    symbols: int
    in_scope: bool


def repos_listing(repos: Sequence[RepoLine], scope: Sequence[str]) -> str:
    lines = ["*Indexed repositories*"]
    for repo in repos:
        mark = "✅ " if repo.in_scope else ""
        state = "" if repo.status == "ready" else f" _({repo.status})_"
        lines.append(f"{mark}`{repo.name}`{state}: {repo.files:,} files, {repo.symbols:,} symbols")
    lines.append("")
    lines.append(scope_line(scope))
    lines.append("Change it with `/repo NAME` or `/repo all`.")
    return "\n".join(lines)


def scope_line(scope: Sequence[str]) -> str:
    if not scope:
        return "Scope: *all repositories*."
    return "Scope: " + ", ".join(f"*{name}*" for name in scope) + "."


def repo_usage(scope: Sequence[str]) -> str:
    return f"{scope_line(scope)}\nUse `/repo NAME` (several: `/repo api, web`) or `/repo all`. See `/repos`."


def repo_scope_set(scope: Sequence[str]) -> str:
    if not scope:
        return "Done: I'll search *all repositories* again."
    names = ", ".join(f"*{name}*" for name in scope)
    return f"Done: I'll search only {names}. `/repo all` to undo."


def repo_unknown(unknown: Sequence[str], valid: Sequence[str]) -> str:
    names = ", ".join(f"`{name}`" for name in unknown)
    noun = "that repository" if len(unknown) == 1 else "those repositories"
    if not valid:
        return f"I don't know {noun} ({names}). {NO_REPOSITORIES}"
    options = ", ".join(f"`{name}`" for name in valid)
    return f"I don't know {noun}: {names}.\nIndexed: {options}"


# --- data rights ----------------------------------------------------------------------------------

def delete_prompt(window_minutes: int) -> str:
    return (
        "This erases everything repotalk holds about you: conversations, questions, answers and your number.\n"
        f"To confirm, reply *{CONFIRM_DELETE_PHRASE}* within {window_minutes} minutes. Anything else cancels."
    )

NOTHING_TO_CONFIRM = (
    "There is no deletion waiting for confirmation (it may have expired). Send `/delete` to start again."
)


def delete_done(sessions: int, turns: int) -> str:
    return (
        f"Done. I erased {sessions} conversation{'s' if sessions != 1 else ''} and "
        f"{turns} message{'s' if turns != 1 else ''}. Your number is removed after this message. Bye! 👋"
    )


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class ExportTurn:
    at: datetime
    kind: str
    question: str
    answer: str | None
    status: str


@dataclass(frozen=True)
class ExportSession:
    started: datetime
    ended: datetime | None
    end_reason: str | None
    scope: Sequence[str]
    turns: Sequence[ExportTurn]


def export_text(sessions: Sequence[ExportSession], exported_at: datetime) -> str:
    if not sessions:
        return f"*Your repotalk data* ({stamp(exported_at)})\n\nI hold nothing about you."
    parts = [
        f"*Your repotalk data* ({stamp(exported_at)})",
        f"{len(sessions)} conversation{'s' if len(sessions) != 1 else ''}, oldest first.",
    ]
    for number, session in enumerate(sessions, start=1):
        if session.ended is None:
            period = f"{stamp(session.started)}, active"
        else:
            period = f"{stamp(session.started)} to {stamp(session.ended)} ({session.end_reason or 'ended'})"
        scope = ", ".join(session.scope) if session.scope else "all repositories"
        lines = [f"*Conversation {number}*: {period}", f"_Scope: {scope}_"]
        for turn in session.turns:
            lines.append(f"[{stamp(turn.at)}] *You:* {turn.question}")
            if turn.kind in ("question", "pattern"):
                if turn.answer is not None:
                    lines.append(f"*repotalk:* {turn.answer}")
                else:
                    lines.append("_(no answer: failed)_" if turn.status == "failed" else "_(no answer yet)_")
        if not session.turns:
            lines.append("_(no messages)_")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


GREETING = (
    "Hi! 👋 Ask me anything about your code, e.g. _where do we verify webhook signatures?_ "
    "or `/search def process_webhook`. `/help` lists everything I can do."
)
THANKS = "You're welcome! Anything else about the code?"
ABOUT_ME = (
    "I'm *repotalk*: I search your team's repositories and answer questions about the code with "
    "`path:line` citations. Try _how do sessions expire?_ or `/help`."
)
OFF_TOPIC = (
    "I only know about your code, so I can't help with that one. Ask me where something happens in the "
    "codebase, or send `/help`."
)
