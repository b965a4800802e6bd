"""`repotalk rotate-keys`: re-encrypt every encrypted column under the newest key of ENCRYPTION_KEYS.

After a new key is put first in ENCRYPTION_KEYS (the old ones kept after it, so everything still
decrypts), this rewrites each value still sealed by an older key. Rows go in batches, one short
transaction each, walking the primary key. A value already under the newest key is left alone, so a
second run (or a run interrupted and started again) changes nothing more. Each update only applies if the
value is still the one read (a service may rewrite it meanwhile). Once it reports nothing left on older
keys, the old keys can be removed from ENCRYPTION_KEYS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from cryptography.fernet import InvalidToken
from sqlalchemy import Table, and_, select, update

from libs.common import db
from libs.common.models.code_index import Repository
from libs.common.models.conversations import Turn
from libs.common.models.messaging import InboundMessage, OutboundMessage, OutboxEvent, User
from libs.common.security import newest_key_decrypts, rotate

log = logging.getLogger(__name__)

BATCH = 500

# Every column holding Fernet tokens (a test checks that each `*_enc` column of the schema is listed).
ENCRYPTED_COLUMNS: dict[Table, tuple[str, ...]] = {
    cast(Table, User.__table__): ("address_enc",),
    cast(Table, InboundMessage.__table__): ("body_enc",),
    cast(Table, OutboundMessage.__table__): ("body_enc",),
    cast(Table, OutboxEvent.__table__): ("envelope",),
    cast(Table, Turn.__table__): ("question_enc", "answer_enc", "request_enc"),
    cast(Table, Repository.__table__): ("source_enc",),
}


@dataclass
class TableReport:
    rows: int = 0  # rows read
    rotated: int = 0  # values re-encrypted under the newest key
    current: int = 0  # values already under it
    unreadable: int = 0  # values no configured key opens (left as they are)
    changed_meanwhile: int = 0  # rows rewritten by a service between our read and our update (already current)


@dataclass
class RotationReport:
    tables: dict[str, TableReport] = field(default_factory=dict)

    @property
    def rotated(self) -> int:
        return sum(t.rotated for t in self.tables.values())

    @property
    def unreadable(self) -> int:
        return sum(t.unreadable for t in self.tables.values())


def rotate_table(table: Table, columns: tuple[str, ...], batch: int = BATCH) -> TableReport:
    [key] = table.primary_key.columns
    report = TableReport()
    cols = [table.c[name] for name in columns]
    last = None
    while True:
        query = select(key, *cols).order_by(key).limit(batch)
        if last is not None:
            query = query.where(key > last)
        with db.get_engine().begin() as conn:
            rows = conn.execute(query).all()
            for row in rows:
                report.rows += 1
                values: dict[str, str] = {}
                for name, token in zip(columns, row[1:], strict=True):
                    if token is None:
                        continue
                    if newest_key_decrypts(token):
                        report.current += 1
                        continue
                    try:
                        values[name] = rotate(token)
                    except InvalidToken:
                        report.unreadable += 1
                if not values:
                    continue
                unchanged = and_(key == row[0], *(table.c[name] == row[1 + columns.index(name)] for name in values))
                result = conn.execute(update(table).where(unchanged).values(**values))
                if result.rowcount:
                    report.rotated += len(values)
                else:
                    report.changed_meanwhile += 1
        if not rows:
            return report
        last = rows[-1][0]
        if len(rows) < batch:
            return report


def rotate_all(batch: int = BATCH, progress: Callable[[str, TableReport], None] | None = None) -> RotationReport:
    report = RotationReport()
    for table, columns in ENCRYPTED_COLUMNS.items():
        report.tables[table.name] = table_report = rotate_table(table, columns, batch)
        log.info("rotated %s: %s", table.name, table_report)
        if progress is not None:
            progress(table.name, table_report)
    return report
