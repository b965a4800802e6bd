"""The pattern search's trigram prefilter: ripgrep reads only the files whose trigram bitmap holds
the literal text the pattern fixes, and finds exactly what a search of the whole tree finds."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import tantivy

from services.code_search import engine, grams, regex, syntax
from services.code_search import query as query_parser
from services.code_search.engine import index_repository, search
from services.code_search.index import get_index


@pytest.mark.parametrize(
    ("pattern", "case_sensitive", "runs"),
    [
        ("isolation_level", None, [["olation_level"]]),  # s and k may be folded from non-ASCII letters
        ("isolation_level", True, [["isolation_level"]]),
        ("TODO|FIXME|XXX", None, [["TODO"], ["FIXME"], ["XXX"]]),  # uppercase: smart case is sensitive
        (r"class \w+Session\b", None, [["class ", "Session"]]),
        (r"def \w+_execute\(", None, [["def ", "_execute("]]),
        (r"raise exc\.InvalidRequestError\(", True, [["raise exc.InvalidRequestError("]]),
        (r"colou?r_name", None, [["colo", "r_name"]]),  # u is optional
        ("abc+d", True, [["abc"]]),
        (r"\S\Wing", None, [["ing"]]),  # escapes are not uppercase literals: insensitive
        ("ab|cde", None, None),  # one alternative fixes no three characters
        ("(?i)hello", None, None),  # flags change how the rest reads
        ("\u00e9t\u00e9 \u00e0", True, None),  # non-ASCII letters: no run of three ASCII characters
    ],
)
def test_runs_every_match_must_hold(pattern: str, case_sensitive: bool | None, runs: list[list[str]] | None) -> None:
    assert regex.literal_runs(pattern, case_sensitive) == runs


def test_smart_case_reads_only_literals() -> None:
    assert regex._case_insensitive(r"\p{Lu}\S\w+ing", None)
    assert not regex._case_insensitive(r"\bAbc", None)
    assert not regex._case_insensitive("[A-Z]x", None)
    assert regex._case_insensitive("ABC", False) and not regex._case_insensitive("abc", True)


def test_a_bitmap_holds_every_trigram_of_its_text() -> None:
    text = b"def verify_Twilio_signature(request):\n    return hmac.compare_digest(a, b)\n"
    row = grams.bitmap(text)
    assert len(row) == grams.ROW_BYTES
    table = grams.GramTable(["r\x00a.py", "r\x00b.py"], [row, grams.bitmap(b"nothing to see here")])
    assert table.matching([grams.buckets(["verify_twilio_signature("])]) == ["r\x00a.py"]
    assert table.matching([grams.buckets(["COMPARE_DIGEST"])]) == ["r\x00a.py"]  # lowercased on both sides
    assert table.matching([grams.buckets(["zzqqxx"]), grams.buckets(["to see"])]) == ["r\x00b.py"]
    assert grams.GramTable([], []).matching([grams.buckets(["abc"])]) == []


def test_the_table_matches_exactly_the_rows_holding_every_bucket_of_an_alternative() -> None:
    # Rows and buckets at random, against the definition read bit by bit: every bit position of a byte, the
    # first and last rows, alternatives that share buckets or match nothing.
    rng = random.Random(7)
    rows = [bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(grams.ROW_BYTES)) for _ in range(61)]
    keys = [f"r\x00{i}.py" for i in range(len(rows))]
    table = grams.GramTable(keys, rows)

    def holds(row: bytes, wanted: list[int]) -> bool:
        return all(row[b >> 3] & (0x80 >> (b & 7)) for b in wanted)

    for _ in range(300):
        alternatives = [rng.sample(range(grams.BUCKETS), rng.randint(1, 4)) for _ in range(rng.randint(1, 3))]
        expected = [key for key, row in zip(keys, rows, strict=True) if any(holds(row, w) for w in alternatives)]
        assert table.matching(alternatives) == expected


def test_a_replica_without_embeddings_searches_without_loading_numpy(database: str, sample_repo: Path) -> None:
    # numpy costs a code_search process about 20 MB; only indexing and semantic search need it.
    index_repository(sample_repo)
    script = (
        "import sys\n"
        "from services.code_search import worker\n"
        "from services.code_search.engine import search\n"
        "assert search('where is the webhook signature verified?').hits\n"
        "assert search('verify_twilio_signature', mode='pattern').hits\n"
        "print('numpy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def _unfiltered(monkeypatch: pytest.MonkeyPatch, query: str) -> set[tuple[str, int]]:
    with monkeypatch.context() as patched:
        patched.setattr(engine, "_candidate_files", lambda *args: None)
        return {(h.path, h.line) for h in search(query, mode="pattern", limit=50).hits}


def test_the_prefilter_finds_what_the_whole_tree_search_finds(
    database: str, sample_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line longer than a chunk keeps, a Kelvin sign that a case-insensitive k matches, a long s.
    (sample_repo / "wide.py").write_text("X = '" + "a" * 500 + " verify_twilio_signature'\n")
    (sample_repo / "units.txt").write_text("temperature in \u212aelvin\nthe cla\u017f\u017f of a \u017fession\n")
    index_repository(sample_repo)
    index = get_index()
    indexed = len(index.indexed_paths("sample_repo"))
    for query in (
        "twilio_signature",
        r"def \w+_signature\(",
        "kelvin",
        "class of a session",
        "TODO|FIXME|XXX",
        "Twilio|kelvin",
        "nowhere_at_all_zzq",
        "verify_twilio_signature lang:python",
    ):
        files = engine._candidate_files(index, query.split(" lang:")[0], ["sample_repo"], [sample_repo])
        assert files is not None and len(files) < indexed, query
        hits = {(h.path, h.line) for h in search(query, mode="pattern", limit=50).hits}
        assert hits == _unfiltered(monkeypatch, query), query
    assert {h.path for h in search("kelvin", mode="pattern").hits} == {"units.txt"}
    assert {h.path for h in search("class of a session", mode="pattern").hits} == {"units.txt"}
    assert "wide.py" in {h.path for h in search("twilio_signature'", mode="pattern", limit=50).hits}


def test_a_changed_file_is_found_by_its_new_text_once_reindexed(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    assert search("quarterly_ledger_total", mode="pattern").hits == []
    (sample_repo / "ledger.py").write_text("def quarterly_ledger_total():\n    return 0\n")
    index_repository(sample_repo)
    hits = search("quarterly_ledger_total", mode="pattern").hits
    assert [(h.path, h.line, h.symbol) for h in hits] == [("ledger.py", 1, "quarterly_ledger_total")]
    (sample_repo / "ledger.py").write_text("def other_total():\n    return 0\n")
    index_repository(sample_repo)
    assert search("quarterly_ledger_total", mode="pattern").hits == []


def test_files_without_a_bitmap_are_always_read(database: str, sample_repo: Path) -> None:
    # An index written before bitmaps existed: the file is read whatever the pattern.
    index_repository(sample_repo)
    index = get_index()
    with index.writer() as writer:
        writer.raw.delete_documents_by_query(
            tantivy.Query.boolean_query(
                [
                    (tantivy.Occur.Must, index.term("doc_type", "grams")),
                    (tantivy.Occur.Must, index.term("path", "README.md")),
                ]
            )
        )
        writer.commit()
    files = engine._candidate_files(index, "nowhere_at_all_zzq", ["sample_repo"], [sample_repo])
    assert files == [str(sample_repo / "README.md")]


def test_bitmaps_leave_with_their_file_and_never_reach_a_question(database: str, sample_repo: Path) -> None:
    index_repository(sample_repo)
    index = get_index()
    before = len(index._gram_table().keys)
    assert before == len(index.indexed_paths("sample_repo"))
    (sample_repo / "README.md").unlink()
    index_repository(sample_repo)
    assert len(index._gram_table().keys) == before - 1
    # Questions never reach a bitmap document (it holds a path, nothing to show).
    parsed = query_parser.parse("where is README.md")
    built = engine._keyword_query(index, parsed, None, syntax.parse_search("where is README.md", "question"))
    searcher = index.searcher()
    found = searcher.search(built, 100, count=False).hits
    assert found and all(searcher.doc(address).get_first("doc_type") != "grams" for _score, address in found)


def test_warming_builds_what_the_first_searches_would(database: str, sample_repo: Path) -> None:
    from libs.common.settings import get_settings
    from services.code_search.index import CodeIndex

    index_repository(sample_repo)
    fresh = CodeIndex(get_settings().index_dir)  # a worker's handle at start: nothing loaded yet
    assert fresh._grams is None and not fresh._paths
    fresh.warm()
    assert fresh._grams is not None and len(fresh._grams.keys) == len(fresh.indexed_paths("sample_repo"))
    assert "sample_repo" in fresh._paths
