"""Migrations build exactly the schema the models describe, on Postgres and on SQLite, and unwind."""

from __future__ import annotations

from sqlalchemy import inspect

from libs.common.db import get_engine
from libs.common.schema import downgrade, migrate, pending_changes


def test_migrations_match_the_models(database: str) -> None:
    assert pending_changes() == []


def test_migrations_downgrade_to_nothing_and_back(database: str) -> None:
    downgrade("base")
    assert set(inspect(get_engine()).get_table_names()) <= {"alembic_version"}
    migrate("head")
    assert "turns" in inspect(get_engine()).get_table_names()
    assert pending_changes() == []
