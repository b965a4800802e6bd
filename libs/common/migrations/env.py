"""Alembic environment: the URL comes from the settings (or the caller's config), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import libs.common.models  # noqa: F401  (registers every table)
from libs.common.db import Base, get_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with get_engine().connect() as conn:
        _run(conn)


def _run(connection: Connection) -> None:
    # Batch mode lets ALTER TABLE migrations run on SQLite too.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
