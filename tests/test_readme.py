"""The README stays true: every setting documented as the code defines it, the first commands present."""

from __future__ import annotations

from pathlib import Path

from repotalk.settings_doc import render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_settings_table_matches_the_settings_classes(base_env: dict[str, str]) -> None:
    text = README.read_text()
    assert render(text) == text, "README settings table is stale: run `.venv/bin/python -m repotalk.settings_doc`"


def test_readme_starts_with_the_run_and_test_commands() -> None:
    text = README.read_text()
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make run" in first_block and "make test" in first_block
