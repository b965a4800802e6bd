"""allowed_users: users admitted while the allow-list is on (hashed ids only)

Revision ID: 0010_allowed_users
Revises: 0009_index_progress
Create Date: 2026-11-23 13:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import libs.common.db


revision: str = '0010_allowed_users'
down_revision: str | None = '0009_index_progress'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('allowed_users',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('admitted_at', libs.common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_allowed_users'))
    )


def downgrade() -> None:
    op.drop_table('allowed_users')
