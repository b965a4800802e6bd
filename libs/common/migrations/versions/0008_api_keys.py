"""api_keys: hashed API keys of the admin API

Revision ID: 0008_api_keys
Revises: 0007_analytics_ai_counts
Create Date: 2026-11-23 10:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import libs.common.db


revision: str = '0008_api_keys'
down_revision: str | None = '0007_analytics_ai_counts'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', libs.common.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', libs.common.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', libs.common.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index('ux_api_keys_active_name', ['name'], unique=True,
                              sqlite_where=sa.text('revoked_at IS NULL'),
                              postgresql_where=sa.text('revoked_at IS NULL'))


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index('ux_api_keys_active_name')

    op.drop_table('api_keys')
