"""`repotalk rotate-keys`: every encrypted column ends up under the newest key, in batches, idempotently."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from typer.testing import CliRunner

from libs.common import db
from libs.common.key_rotation import ENCRYPTED_COLUMNS, rotate_all
from libs.common.models.conversations import Turn
from libs.common.models.messaging import OutboundMessage
from libs.common.security import decrypt, encrypt
from repotalk.cli import app as cli
from services.gateway.inbound import InboundMessageIn, record_inbound
from tests.conftest import apply_env

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _plaintexts() -> dict[tuple[str, str, str], str]:
    """Every encrypted value in the database, decrypted with the keys configured now."""
    values = {}
    with db.get_engine().connect() as conn:
        for table, columns in ENCRYPTED_COLUMNS.items():
            [key] = table.primary_key.columns
            for row in conn.execute(select(key, *(table.c[name] for name in columns))):
                for name, token in zip(columns, row[1:], strict=True):
                    if token is not None:
                        values[(table.name, name, str(row[0]))] = decrypt(token)
    return values


def _fill(count: int) -> None:
    for n in range(count):
        record_inbound(InboundMessageIn(f"SM{n:032d}", f"whatsapp:+1555000{n:04d}", f"question number {n}"))
    with db.session_scope() as session:
        for n in range(count):
            session.add(Turn(correlation_id=f"SM{n:032d}", session_id=None, user_id=f"u_{n}", kind="question",
                             question_enc=encrypt(f"question number {n}"),
                             answer_enc=encrypt(f"answer {n}") if n % 2 else None, request_enc=None))
            session.add(OutboundMessage(reply_id=f"r{n}", correlation_id=f"SM{n:032d}", chunk_index=0, chunk_count=1,
                                        user_id=f"u_{n}", body_enc=encrypt(f"answer {n}"), channel="sandbox"))


def test_every_encrypted_column_is_rotated() -> None:
    listed = {(table.name, name) for table, names in ENCRYPTED_COLUMNS.items() for name in names}
    for table in db.Base.metadata.sorted_tables:
        for column in table.columns:
            if column.name.endswith("_enc"):
                assert (table.name, column.name) in listed, f"{table.name}.{column.name} is not rotated"


def test_rotation_moves_everything_to_the_new_key(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, ENCRYPTION_KEYS=OLD, RATE_LIMIT_PER_MINUTE="0")
    _fill(7)
    before = _plaintexts()
    # users, inbound, outbox (7 each), turns (7 questions + 3 answers), outbound (7)
    assert len(before) == 7 * 5 + 3

    apply_env(monkeypatch, ENCRYPTION_KEYS=f"{NEW},{OLD}")
    report = rotate_all(batch=3)  # several batches per table
    assert report.rotated == len(before) and report.unreadable == 0
    assert report.tables["turns"].rotated == 10 and report.tables["users"].rows == 7

    again = rotate_all(batch=3)  # idempotent: nothing left on the old key
    assert again.rotated == 0
    assert sum(t.current for t in again.tables.values()) == len(before)

    apply_env(monkeypatch, ENCRYPTION_KEYS=NEW)  # the old key is gone: everything still opens
    assert _plaintexts() == before

    apply_env(monkeypatch, ENCRYPTION_KEYS=OLD)  # and the old key alone opens nothing
    with pytest.raises(ValueError):
        _plaintexts()


def test_cli_reports_counts_and_fails_on_unreadable_values(database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, ENCRYPTION_KEYS=OLD, RATE_LIMIT_PER_MINUTE="0")
    _fill(2)
    apply_env(monkeypatch, ENCRYPTION_KEYS=f"{NEW},{OLD}")
    result = CliRunner().invoke(cli, ["rotate-keys", "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert "rotated 11 value(s) to the newest key" in result.output
    assert "turns" in result.output and "already current" in result.output

    # A value sealed by a key that is no longer configured is reported, left alone, and fails the run.
    apply_env(monkeypatch, ENCRYPTION_KEYS=Fernet.generate_key().decode())
    with db.session_scope() as session:
        session.add(Turn(correlation_id="SMstray", session_id=None, user_id="u_x", kind="question",
                         question_enc=encrypt("stray")))
    apply_env(monkeypatch, ENCRYPTION_KEYS=f"{NEW},{OLD}")
    result = CliRunner().invoke(cli, ["rotate-keys"])
    assert result.exit_code == 1
    assert "1 value(s) could not be decrypted" in result.output
