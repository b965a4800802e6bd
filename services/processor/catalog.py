"""The repositories a user can scope questions to (read-only view of code_search's Repository rows)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from services.processor.tables import REPOSITORIES

ALL = "all"
_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class Repo:
    name: str
    status: str
    file_count: int
    symbol_count: int


_LIST = select(
    REPOSITORIES.c.name, REPOSITORIES.c.status, REPOSITORIES.c.file_count, REPOSITORIES.c.symbol_count
).order_by(REPOSITORIES.c.name)


def repositories(conn: Connection) -> list[Repo]:
    return [Repo(row[0], row[1], row[2] or 0, row[3] or 0) for row in conn.execute(_LIST)]


def parse_names(argument: str) -> list[str]:
    """'api, web  api' -> ['api', 'web'] (order kept, duplicates dropped)."""
    names: list[str] = []
    for name in _SEPARATORS.split(argument.strip()):
        if name and name not in names:
            names.append(name)
    return names


@dataclass(frozen=True)
class ScopeChoice:
    repos: list[str] = field(default_factory=list)  # canonical names; empty: every repository
    unknown: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)


def resolve_scope(conn: Connection, names: Sequence[str]) -> ScopeChoice:
    """Match names against the indexed repositories, exactly first, then ignoring case (phones like to
    capitalise). ``all`` alone clears the scope."""
    valid = [repo.name for repo in repositories(conn)]
    if [name.lower() for name in names] == [ALL]:
        return ScopeChoice(repos=[], valid=valid)
    by_lower: dict[str, list[str]] = {}
    for name in valid:
        by_lower.setdefault(name.lower(), []).append(name)
    chosen: list[str] = []
    unknown: list[str] = []
    for name in names:
        if name in valid:
            match: str | None = name
        else:
            candidates = by_lower.get(name.lower(), [])
            match = candidates[0] if len(candidates) == 1 else None
        if match is None:
            unknown.append(name)
        elif match not in chosen:
            chosen.append(match)
    return ScopeChoice(repos=chosen, unknown=unknown, valid=valid)
