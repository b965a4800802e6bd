"""Migrations build exactly the schema the models describe, on Postgres and on SQLite, and unwind."""

from __future__ import annotations

from sqlalchemy import inspect, text

from libs.common.db import get_engine
from libs.common.schema import downgrade, migrate, pending_changes
from libs.common.security import decrypt


def test_migrations_match_the_models(database: str) -> None:
    assert pending_changes() == []


def test_migrations_downgrade_to_nothing_and_back(database: str) -> None:
    downgrade("base")
    assert set(inspect(get_engine()).get_table_names()) <= {"alembic_version"}
    migrate("head")
    assert "turns" in inspect(get_engine()).get_table_names()
    assert pending_changes() == []


def test_a_git_url_stored_with_credentials_is_sealed_by_the_upgrade(database: str) -> None:
    url = "https://bob:ghp_s3cretT0ken@git.example.com/acme/relay.git"
    downgrade("0011_repository_desired_state")
    with get_engine().begin() as conn:
        conn.execute(
            text("INSERT INTO repositories (name, root, status, file_count, symbol_count, chunk_count, skipped, "
                 "created_at, source, generation, indexed_generation) VALUES "
                 "(:n, '', 'pending', 0, 0, 0, '{}', CURRENT_TIMESTAMP, :s, 1, 0)"),
            [{"n": "private", "s": url}, {"n": "public", "s": "https://github.com/acme/open.git"}],
        )
    migrate("head")
    with get_engine().connect() as conn:
        rows = {r.name: r for r in conn.execute(text("SELECT name, source, source_enc FROM repositories"))}
    assert rows["private"].source == "https://git.example.com/acme/relay.git"
    assert "s3cret" not in rows["private"].source_enc and decrypt(rows["private"].source_enc) == url
    assert (rows["public"].source, rows["public"].source_enc) == ("https://github.com/acme/open.git", None)

    downgrade("0011_repository_desired_state")
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT source FROM repositories WHERE name = 'private'")).scalar_one() == url
    migrate("head")
