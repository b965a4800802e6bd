"""Tables owned by code_search: indexed repositories and files (the search index itself lives on
the code_search service's local disk)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from libs.common.db import Base, UTCDateTime, utcnow


class Repository(Base):
    __tablename__ = "repositories"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    root: Mapped[str] = mapped_column(Text)  # local path of the working tree
    url: Mapped[str | None] = mapped_column(Text, nullable=True)  # remote, when known
    branch: Mapped[str | None] = mapped_column(String(200), nullable=True)
    commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | indexing | ready | failed
    file_count: Mapped[int] = mapped_column(Integer, default=0)
    symbol_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # reason -> count
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the last run failed (status failed)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    indexed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Desired state, written by the admin API and the git webhook; every code_search replica converges
    # to it (its own index on its own disk). ``source`` is what to index: a path on the code_search
    # replicas or a git URL, without credentials. NULL: not managed through the API (REPOS,
    # `repotalk index`): each process indexes those itself.
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The git URL as given, Fernet-encrypted, when it carries the credentials a private remote needs.
    source_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_branch: Mapped[str | None] = mapped_column(String(200), nullable=True)  # asked for; NULL: the default
    # Bumped by every add, re-index request and matching git push; a replica whose index is older re-indexes.
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The newest generation a replica has finished (what the console waits for after a request).
    indexed_generation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class IndexedFile(Base):
    __tablename__ = "indexed_files"

    repo: Mapped[str] = mapped_column(String(100), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    symbol_count: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    indexed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IndexProgress(Base):
    """How far the current (or last) indexing run of a repository has got, for live progress pages.

    Written by code_search while it indexes (throttled), read by the gateway's console: the one
    place both see in every mode is the database.
    """

    __tablename__ = "index_progress"

    repo: Mapped[str] = mapped_column(String(100), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16), default="starting")  # starting | cloning | reading | done | failed
    done: Mapped[int] = mapped_column(Integer, default=0)  # files read so far
    total: Mapped[int] = mapped_column(Integer, default=0)  # files to read in this run
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
