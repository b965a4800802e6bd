"""Bringing a database to the current schema with Alembic (Postgres and SQLite alike)."""

from __future__ import annotations

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
    with get_engine().begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def create_schema() -> None:
    """The schema tests start from.

    TODO(integration): switch to migrate() once the first revision is generated from the models.
    """
    from libs.common.db import Base

    Base.metadata.create_all(get_engine())
