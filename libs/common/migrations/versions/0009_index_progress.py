"""index_progress: live progress of a repository's indexing run

Revision ID: 0009_index_progress
Revises: 0008_api_keys
Create Date: 2026-11-23 12:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import libs.common.db


revision: str = '0009_index_progress'
down_revision: str | None = '0008_api_keys'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('index_progress',
    sa.Column('repo', sa.String(length=100), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('started_at', libs.common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', libs.common.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('repo', name=op.f('pk_index_progress'))
    )


def downgrade() -> None:
    op.drop_table('index_progress')
