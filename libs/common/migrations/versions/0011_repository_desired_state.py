"""repositories: desired state (source, branch asked for, generation) that code_search replicas converge to

Revision ID: 0011_repository_desired_state
Revises: 0010_allowed_users
Create Date: 2026-11-23 14:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011_repository_desired_state'
down_revision: str | None = '0010_allowed_users'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('repositories') as batch_op:
        batch_op.add_column(sa.Column('source', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('source_branch', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('generation', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(
            sa.Column('indexed_generation', sa.Integer(), server_default=sa.text('0'), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table('repositories') as batch_op:
        batch_op.drop_column('indexed_generation')
        batch_op.drop_column('generation')
        batch_op.drop_column('source_branch')
        batch_op.drop_column('source')
