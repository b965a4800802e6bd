"""The shared catalog of indexed repositories in the database (``repositories``, ``indexed_files``).

The search index itself lives on each replica's local disk; the database says what is indexed,
where from (commit, remote), how big it is and what was skipped, for every service to read — and what
*should* be indexed (source, branch, generation): the desired state every replica converges to.
Writes are batched upserts that behave the same on Postgres and SQLite.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from libs.common.db import session_scope, utcnow
from libs.common.models.code_index import IndexedFile, Repository
from libs.common.urls import redact_url

BATCH = 500


@dataclass(frozen=True)
class GitInfo:
    commit: str | None = None
    branch: str | None = None
    url: str | None = None


def _git_dir(root: Path) -> Path | None:
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text("utf-8", errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            target = target if target.is_absolute() else (root / target)
            return target if target.is_dir() else None
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text().strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text().strip()
            return value or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text("utf-8", errors="replace").splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[1].strip() == ref:
                return parts[0]
    return None


def git_info(root: Path) -> GitInfo:
    """Commit, branch and origin of a git checkout, read from ``.git`` (no git binary needed)."""
    git_dir = _git_dir(root)
    if git_dir is None:
        return GitInfo()
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return GitInfo()
    branch = None
    if head.startswith("ref:"):
        ref = head[4:].strip()
        branch = ref.removeprefix("refs/heads/")
        commit = _resolve_ref(git_dir, ref)
    else:
        commit = head if re.fullmatch(r"[0-9a-f]{40,64}", head) else None
    url = None
    config_path = git_dir / "config"
    commondir = git_dir / "commondir"
    if commondir.is_file():
        config_path = (git_dir / commondir.read_text().strip()).resolve() / "config"
    if config_path.is_file():
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(config_path, encoding="utf-8")
            remotes = [s for s in parser.sections() if s.startswith('remote "')]
            preferred = 'remote "origin"' if 'remote "origin"' in remotes else (remotes[0] if remotes else None)
            if preferred and parser.has_option(preferred, "url"):
                url = redact_url(parser.get(preferred, "url")) or None
        except (configparser.Error, OSError):
            url = None
    return GitInfo(commit=commit, branch=branch, url=url)


def _upsert(
    session: Session, model: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str], keep: Sequence[str] = ()
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every column but ``keep``, in batches.

    One single-row statement run over a batch of parameter sets (executemany), through the Core
    table: a multi-row VALUES statement is compiled anew for every batch (a third of a second for a
    thousand files), and the ORM's bulk path would inspect every row."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(model.__table__)
    updates = {column: statement.excluded[column] for column in rows[0] if column not in (*keys, *keep)}
    statement = statement.on_conflict_do_update(index_elements=list(keys), set_=updates)
    connection = session.connection()
    for start in range(0, len(rows), BATCH):
        connection.execute(statement, list(rows[start : start + BATCH]))


def mark_indexing(name: str, root: Path, git: GitInfo) -> None:
    with session_scope() as session:
        _upsert(
            session,
            Repository,
            [
                {
                    "name": name,
                    "root": str(root),
                    "url": git.url,
                    "branch": git.branch,
                    "commit": git.commit,
                    "status": "indexing",
                    "error": None,
                    "created_at": utcnow(),
                }
            ],
            ["name"],
            keep=["created_at"],
        )


def mark_failed(name: str, error: str) -> None:
    with session_scope() as session:
        repo = session.get(Repository, name)
        if repo is not None:
            repo.status = "failed"
            repo.error = error[:2000]


def record_files(
    name: str,
    rows: Iterable[dict[str, Any]],
    removed: Iterable[str],
    *,
    files: int,
    symbols: int,
    chunks: int,
    skipped: dict[str, int],
) -> None:
    """Upsert the files (re)indexed, drop the ones gone, and mark the repository ready — one transaction."""
    now = utcnow()
    file_rows = [{**row, "repo": name, "indexed_at": now} for row in rows]
    gone = list(removed)
    with session_scope() as session:
        for start in range(0, len(gone), BATCH):
            session.execute(
                delete(IndexedFile).where(IndexedFile.repo == name, IndexedFile.path.in_(gone[start : start + BATCH]))
            )
        _upsert(session, IndexedFile, file_rows, ["repo", "path"])
        repo = session.get(Repository, name)
        if repo is not None:
            repo.status = "ready"
            repo.file_count = files
            repo.symbol_count = symbols
            repo.chunk_count = chunks
            repo.skipped = dict(skipped)
            repo.indexed_at = now


def file_count(name: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(IndexedFile).where(IndexedFile.repo == name)) or 0)


def forget(name: str) -> None:
    with session_scope() as session:
        session.execute(delete(IndexedFile).where(IndexedFile.repo == name))
        session.execute(delete(Repository).where(Repository.name == name))


def forget_files(name: str) -> None:
    with session_scope() as session:
        session.execute(delete(IndexedFile).where(IndexedFile.repo == name))


# -- desired state: what the admin API and the git webhook ask for, what every replica converges to ----


@dataclass(frozen=True)
class Desired:
    """A repository as the catalog wants it indexed (``generation`` moves on with every request)."""

    name: str
    source: str | None  # a path on the code_search replicas or a git URL; None: not managed through the API
    branch: str | None  # the branch asked for (git); None: the remote's default
    generation: int
    indexed_generation: int
    root: str  # the working tree a replica indexed last (for one not managed through the API)
    url: str | None  # the remote of the indexed tree, without credentials
    indexed_branch: str | None  # the branch a replica found checked out


def _desired(repo: Repository) -> Desired:
    # The credentials of a private remote live only in the encrypted column; ``source`` is for display.
    # (libs.common.security is imported only for such a repository: cryptography weighs ~7 MB of RSS.)
    source = repo.source
    if repo.source_enc:
        from libs.common.security import decrypt

        source = decrypt(repo.source_enc)
    return Desired(
        name=repo.name, source=source, branch=repo.source_branch, generation=repo.generation or 0,
        indexed_generation=repo.indexed_generation or 0, root=repo.root, url=repo.url, indexed_branch=repo.branch,
    )


def repository(name: str) -> Desired | None:
    with session_scope() as session:
        repo = session.get(Repository, name)
        return _desired(repo) if repo is not None else None


def repositories() -> dict[str, Desired]:
    """Every repository in the catalog, managed or not, by name."""
    with session_scope() as session:
        return {repo.name: _desired(repo) for repo in session.scalars(select(Repository)).all()}


def request_index(name: str, source: str, branch: str | None, *, root: str = "", url: str | None = None) -> int:
    """Record that ``name`` is to be indexed from ``source`` (``branch``) and bump its generation; returns it.

    One statement (an upsert that increments), so concurrent requests each get their own generation.
    The status goes back to pending: a failure recorded from now on belongs to this request or a later one.
    """
    with session_scope() as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        shown = redact_url(source)
        secret = None
        if shown != source:
            from libs.common.security import encrypt

            secret = encrypt(source)
        values = insert(Repository).values(
            name=name, root=root, url=url, source=shown, source_enc=secret, source_branch=branch, generation=1,
            status="pending", created_at=utcnow(), skipped={},
        )
        statement = values.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "source": values.excluded.source,
                "source_enc": values.excluded.source_enc,
                "source_branch": values.excluded.source_branch,
                "generation": Repository.generation + 1,
                "status": "pending",
                "error": None,
            },
        ).returning(Repository.generation)
        return int(session.execute(statement).scalar_one())


def mark_generation(name: str, generation: int) -> None:
    """A replica finished ``generation`` of ``name`` (kept as the highest any replica finished)."""
    with session_scope() as session:
        session.execute(
            update(Repository)
            .where(Repository.name == name, Repository.indexed_generation < generation)
            .values(indexed_generation=generation)
        )
