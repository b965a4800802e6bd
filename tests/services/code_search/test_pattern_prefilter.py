"""The pattern search's word prefilter (ripgrep reads only the files that can match) and the
largest files of a repository (indexed whole, found by a question)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.code_search import engine, regex
from services.code_search.engine import index_repository, search
from services.code_search.index import get_index


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"raise exc\.InvalidRequestError\(", [["exc", "InvalidRequestError"]]),
        (r"\bpool_pre_ping\b", [["pool", "pre", "ping"]]),
        (r"\bfoo\b|\bbar\b", [["foo"], ["bar"]]),
        (r"def \w+_execute\(", [["execute"]]),
        (r"\bpool_pre_pings?\b", [["pool", "pre"]]),  # "ping" may go on: "pings"
        ("isolation_level", None),  # either end may continue a word: "xisolation_levels"
        (r"class \w+Session\b", None),
        ("TODO|FIXME", None),
        (r"\bab?c\b", None),
        (r"(?x) \bok\b", None),  # flags change how the rest reads
        (r"\p{Greek}+ \bok\b", None),
        ("(a+)+$", None),
        (r"[[:alpha:]] \bok\b", [["ok"]]),
    ],
)
def test_words_every_match_must_hold(pattern: str, words: list[list[str]] | None) -> None:
    assert regex.literal_words(pattern) == words


def _unfiltered(monkeypatch: pytest.MonkeyPatch, pattern: str) -> set[tuple[str, int]]:
    with monkeypatch.context() as patched:
        patched.setattr(engine, "_candidate_files", lambda *args: None)
        return {(h.path, h.line) for h in search(pattern, mode="pattern", limit=50).hits}


def test_the_prefilter_finds_what_the_whole_tree_search_finds(
    database: str, sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line longer than a chunk keeps (its end is not in the index), and a word on a line of its own.
    (sample_repo / "wide.py").write_text("X = '" + "a" * 500 + " verify_twilio_signature'\n")
    (sample_repo / "notes.txt").write_text("intro\n\n\n" + "\n" * 60 + "ok\n")
    index_repository(sample_repo)
    index = get_index()
    assert "wide.py" in index.incomplete_paths("sample_repo")
    for pattern in (r"\bverify_twilio_signature\b", r"def verify_twilio_signature\(", r"\bok\b", r"\bnowhere_at_all\b"):
        files = engine._candidate_files(index, pattern, ["sample_repo"], [sample_repo])
        assert files is not None, pattern
        hits = {(h.path, h.line) for h in search(pattern, mode="pattern", limit=50).hits}
        assert hits == _unfiltered(monkeypatch, pattern), pattern
    wide = search(r"\bverify_twilio_signature\b", mode="pattern", limit=50).hits
    assert "wide.py" in {h.path for h in wide}
    # Only the files holding the words are read.
    files = engine._candidate_files(index, r"def verify_twilio_signature\(", ["sample_repo"], [sample_repo])
    assert files is not None and len(files) < len(index.indexed_paths("sample_repo"))


def test_a_pattern_no_file_can_match_is_still_checked(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    assert search(r"\bnowhere_at_all\b", mode="pattern").hits == []
    result = search(r"\bnowhere_at_all\b(", mode="pattern")
    assert result.code == "invalid_pattern"


def test_a_question_about_the_largest_file_is_answered(database: str, sample_repo: Path) -> None:
    # About 1.8 MB of Python (just under INDEX_MAX_FILE_BYTES), the answer at its very end.
    body = "".join(f"def filler_{n}(value):\n    return value + {n}\n\n\n" for n in range(37_000))
    body += 'def rebuild_the_quarterly_ledger(entries):\n    """Sum the ledger entries."""\n    return sum(entries)\n'
    (sample_repo / "huge_module.py").write_text(body)
    assert (sample_repo / "huge_module.py").stat().st_size > 1_700_000
    summary = index_repository(sample_repo)
    assert "timeout" not in summary.skipped and summary.files >= 1, summary.describe()
    result = search("where is the quarterly ledger rebuilt?")
    hits = result.hits
    assert hits and (hits[0].path, hits[0].symbol) == ("huge_module.py", "rebuild_the_quarterly_ledger"), (
        result.error, summary.describe()
    )
    pattern = search(r"def rebuild_the_quarterly_ledger\(", mode="pattern").hits
    assert [(h.path, h.line) for h in pattern] == [("huge_module.py", 37_000 * 4 + 1)]
