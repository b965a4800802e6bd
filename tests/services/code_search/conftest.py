"""A private copy of the sample repository per test, with the files git would not commit
(ignored, oversized) created on the spot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample_repo"


def make_sample_repo(target: Path) -> Path:
    shutil.copytree(SAMPLE, target)
    # Ignored by the sample's .gitignore (and so never committed with the fixture).
    (target / "debug.log").write_text("verify_twilio_signature failed for SM123\n")
    (target / "build").mkdir()
    (target / "build" / "out.py").write_text("def verify_twilio_signature():\n    return True\n")
    (target / "local_settings.py").write_text("TWILIO_AUTH_TOKEN = 'local'\n")
    # Over the default INDEX_MAX_FILE_BYTES (2 MiB).
    (target / "docs" / "dump.sql").write_text("INSERT INTO sessions VALUES (1);\n" * 70_000)
    # A secret that must never reach a chat.
    (target / ".env").write_text("TWILIO_AUTH_TOKEN=secret-token\n")
    return target


@pytest.fixture
def sample_repo(tmp_path: Path) -> Path:
    return make_sample_repo(tmp_path / "sample_repo")
