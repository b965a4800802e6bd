"""repositories.source_enc: a git URL's credentials encrypted at rest; ``source`` keeps it without them

Revision ID: 0012_repository_source_enc
Revises: 0011_repository_desired_state
Create Date: 2026-12-05 14:00:00.000000
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from libs.common.security import decrypt, encrypt
from libs.common.urls import redact_url

revision: str = '0012_repository_source_enc'
down_revision: str | None = '0011_repository_desired_state'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_repositories = sa.table(
    'repositories', sa.column('name', sa.String), sa.column('source', sa.Text), sa.column('source_enc', sa.Text)
)


def upgrade() -> None:
    with op.batch_alter_table('repositories') as batch_op:
        batch_op.add_column(sa.Column('source_enc', sa.Text(), nullable=True))
    # Sources stored with their credentials by 0011's code: sealed with the deployment's keys.
    bind = op.get_bind()
    for name, source in bind.execute(sa.select(_repositories.c.name, _repositories.c.source)).all():
        if source and redact_url(source) != source:
            bind.execute(
                _repositories.update()
                .where(_repositories.c.name == name)
                .values(source=redact_url(source), source_enc=encrypt(source))
            )


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_repositories.c.name, _repositories.c.source_enc)).all()
    for name, token in rows:
        if token:
            bind.execute(_repositories.update().where(_repositories.c.name == name).values(source=decrypt(token)))
    with op.batch_alter_table('repositories') as batch_op:
        batch_op.drop_column('source_enc')
