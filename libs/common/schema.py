"""Bringing a database to the current schema."""

from __future__ import annotations

import libs.common.models  # noqa: F401  (registers every table)
from libs.common.db import Base, get_engine


def create_schema() -> None:
    """Create every table on the configured database.

    TODO(integration): replaced by Alembic upgrade to head once the first migration is generated.
    """
    Base.metadata.create_all(get_engine())
