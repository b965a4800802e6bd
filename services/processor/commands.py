"""Slash commands: parsed from a message starting with "/", answered on the spot or turned into a
pattern search. Each command is a plain function of a ``Context`` returning a ``CommandResult``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from libs.common.settings import get_settings
from services.processor import catalog, privacy, sessions, texts


@dataclass(frozen=True)
class Command:
    name: str  # lower case, without the slash
    argument: str


def parse(text: str) -> Command:
    """'/Repo  api, web' -> Command('repo', 'api, web')."""
    parts = text.strip().split(maxsplit=1)
    head = parts[0] if parts else "/"
    argument = parts[1].strip() if len(parts) > 1 else ""
    return Command(name=head[1:].lower(), argument=argument)


@dataclass
class Context:
    conn: Connection
    chat: sessions.Chat
    user_id: str
    now: datetime
    argument: str = ""


@dataclass(frozen=True)
class CommandResult:
    reply: str | None = None
    search_pattern: str | None = None  # /search: a pattern search instead of a reply


def _help(ctx: Context) -> CommandResult:
    return CommandResult(reply=texts.help_text(get_settings().conversation.session_idle_minutes))


def _reset(ctx: Context) -> CommandResult:
    sessions.reset_session(ctx.conn, ctx.chat, ctx.now)
    return CommandResult(reply=texts.RESET_DONE)


def _repos(ctx: Context) -> CommandResult:
    repos = catalog.repositories(ctx.conn)
    if not repos:
        return CommandResult(reply=texts.NO_REPOSITORIES)
    scope = list(ctx.chat.repos or [])
    lines = [
        texts.RepoLine(
            name=repo.name,
            status=repo.status,
            files=repo.file_count,
            symbols=repo.symbol_count,
            in_scope=repo.name in scope,
        )
        for repo in repos
    ]
    return CommandResult(reply=texts.repos_listing(lines, scope))


def _repo(ctx: Context) -> CommandResult:
    names = catalog.parse_names(ctx.argument)
    if not names:
        return CommandResult(reply=texts.repo_usage(list(ctx.chat.repos or [])))
    choice = catalog.resolve_scope(ctx.conn, names)
    if choice.unknown:
        return CommandResult(reply=texts.repo_unknown(choice.unknown, choice.valid))
    ctx.chat = sessions.set_repos(ctx.conn, ctx.chat, choice.repos)
    return CommandResult(reply=texts.repo_scope_set(choice.repos))


def _search(ctx: Context) -> CommandResult:
    if not ctx.argument:
        return CommandResult(reply=texts.SEARCH_USAGE)
    return CommandResult(search_pattern=ctx.argument)


def _export(ctx: Context) -> CommandResult:
    return CommandResult(reply=privacy.export(ctx.conn, ctx.user_id, ctx.now))


def _delete(ctx: Context) -> CommandResult:
    ctx.chat = sessions.set_pending(ctx.conn, ctx.chat, privacy.DELETE_ACTION, ctx.now + privacy.DELETE_WINDOW)
    return CommandResult(reply=texts.delete_prompt(int(privacy.DELETE_WINDOW.total_seconds() // 60)))


COMMANDS: dict[str, Callable[[Context], CommandResult]] = {
    "help": _help,
    "reset": _reset,
    "repos": _repos,
    "repo": _repo,
    "search": _search,
    "export": _export,
    "delete": _delete,
}


def known(name: str) -> bool:
    return name in COMMANDS


def run(command: Command, ctx: Context) -> CommandResult:
    handler = COMMANDS.get(command.name)
    if handler is None:
        shown = "/" + command.name.replace("`", "")[:20]
        return CommandResult(reply=texts.UNKNOWN_COMMAND.format(command=shown))
    ctx.argument = command.argument
    return handler(ctx)
