"""Bringing a database to the current schema with Alembic (Postgres and SQLite alike)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

import libs.common.models  # noqa: F401  (registers every table)
from libs.common.db import get_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", get_engine().url.render_as_string(hide_password=False))
    return config


def migrate(revision: str = "head") -> None:
    """Upgrade the configured database to ``revision``."""
    _run(command.upgrade, revision)


def downgrade(revision: str) -> None:
    """Downgrade the configured database to ``revision`` ("base": no tables)."""
    _run(command.downgrade, revision)


def _run(step: Callable[[Config, str], None], revision: str) -> None:
    with get_engine().begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        step(config, revision)


def create_schema() -> None:
    """The schema tests start from: exactly what `repotalk migrate` produces."""
    migrate()


def pending_changes() -> list[object]:
    """Differences between the models and the migrated database (empty when migrations are complete)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from libs.common.db import Base

    with get_engine().connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))
