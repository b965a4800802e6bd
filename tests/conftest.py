"""Shared fixtures: a fresh database per test (Postgres or SQLite), a private Redis key space, and
settings pointed at them. Nothing is flushed that a test did not create."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from libs.common.lifecycle import reset_process_state

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def queued_tasks(prefix: str, queue: str) -> list[tuple[str, Any]]:
    """(task name, first argument) of every task waiting in a queue of the Redis broker, oldest first: an event's
    JSON for an ordinary task, the list of events for a batch."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        raw = client.lrange(f"{prefix}{queue}", 0, -1)
    finally:
        client.close()
    tasks = []
    for message in reversed(raw):  # LPUSH: the newest first
        decoded = json.loads(message)
        tasks.append((decoded["headers"]["task"], json.loads(base64.b64decode(decoded["body"]))[0][0]))
    return tasks


def _pg_base() -> str:
    return PG_ADMIN.rsplit("/", 1)[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty Postgres database, dropped afterwards."""
    name = f"repotalk_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{_pg_base().split('://', 1)[1]}/{name}"
    finally:
        reset_process_state()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A private key prefix on the shared Redis; only keys under it are deleted afterwards."""
    prefix = f"repotalk-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    # Stop this process's batcher first: its last flush would otherwise land after the cleanup.
    reset_process_state()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        # kombu keeps a few bookkeeping keys with the prefix inside the name, not in front of it.
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def apply_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_process_state()


@pytest.fixture
def base_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Settings for an isolated test: data under tmp_path, SQLite, in-memory broker, no keys."""
    for key in list(os.environ):
        if key.startswith(("TWILIO_", "OPENAI_", "ANTHROPIC_", "EMBEDDINGS_")) or key in (
            "DATABASE_URL", "BROKER_URL", "PUBLIC_BASE_URL", "REPOS", "INDEX_DIR",
        ):
            monkeypatch.delenv(key, raising=False)
    env = {
        "REPOTALK_ENV": "test",
        "REPOTALK_DATA_DIR": str(tmp_path / "data"),
        "BROKER_URL": "memory://localhost/",
        "SECRET_KEY": "test-secret-key-0123456789abcdef0123456789",
    }
    apply_env(monkeypatch, **env)
    yield env
    reset_process_state()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointed at a fresh schema on SQLite and on Postgres (the test runs once for each)."""
    from libs.common.schema import create_schema

    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{Path(base_env['REPOTALK_DATA_DIR']) / 'test.db'}"
    apply_env(monkeypatch, DATABASE_URL=url)
    create_schema()
    return url


@pytest.fixture
def pg_database(base_env: dict[str, str], pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Settings pointed at a fresh Postgres schema only."""
    from libs.common.schema import create_schema

    apply_env(monkeypatch, DATABASE_URL=pg_url)
    create_schema()
    return pg_url
