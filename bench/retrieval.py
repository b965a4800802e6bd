"""bench/retrieval: does search put the answering file and function near the top?

A question set (``bench/retrieval_questions/<package>.json``) on a pinned PyPI source distribution,
each question with the files and functions that answer it (developer questions and bug reports with
tracebacks). Prints recall@1/5/10 and MRR for files and functions, beside a plain BM25 over whole
files (tantivy, default tokenizer, one document per file, the question's words) in the same run.

    .venv/bin/python bench/retrieval.py [--questions bench/retrieval_questions/sqlalchemy-2.0.36.json]

With ``--embeddings URL`` (an OpenAI-compatible ``/v1`` base URL, e.g. ``bench/embeddings_server.py``
serving a local sentence-transformers model) the same questions run again with semantic search on, and
the table gains the hybrid rows beside the lexical ones (same index, same run):

    /tmp/embvenv/bin/python bench/embeddings_server.py --port 8765 &   # see its docstring
    .venv/bin/python bench/retrieval.py --embeddings http://127.0.0.1:8765/v1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import tantivy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.search import fetch  # noqa: E402

DEFAULT_QUESTIONS = ROOT / "bench" / "retrieval_questions" / "sqlalchemy-2.0.36.json"
KS = (1, 5, 10)
DEPTH = 30  # hits asked for: enough to find 10 distinct files


def ranks(found: Sequence[str], wanted: set[str]) -> int | None:
    for rank, item in enumerate(found, start=1):
        if item in wanted:
            return rank
    return None


def metrics(positions: list[int | None]) -> dict[str, float]:
    total = len(positions) or 1
    out = {f"R@{k}": sum(1 for p in positions if p is not None and p <= k) / total for k in KS}
    out["MRR"] = sum(1 / p for p in positions if p is not None and p <= 10) / total
    return out


def function_matches(symbol: str | None, path: str, wanted: list[str], files: set[str]) -> bool:
    if not symbol or path not in files:
        return False
    lowered = symbol.lower()
    return any(lowered == w.lower() or lowered.endswith("." + w.lower()) for w in wanted)


class Bm25Files:
    """The baseline: BM25 over whole files, one document each."""

    def __init__(self, tree: Path, paths: Sequence[str]) -> None:
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("path", stored=True, tokenizer_name="raw")
        builder.add_text_field("body", stored=False)
        self.schema = builder.build()
        self.index = tantivy.Index(self.schema)
        writer = self.index.writer(heap_size=200_000_000, num_threads=1)
        for path in paths:
            text = (tree / path).read_text("utf-8", errors="replace")
            writer.add_document(tantivy.Document(path=path, body=text))
        writer.commit()
        self.index.reload()

    def search(self, question: str, limit: int) -> list[str]:
        words = sorted({w.lower() for w in re.findall(r"[A-Za-z0-9]+", question) if len(w) > 1})
        if not words:
            return []
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "body", w)) for w in words]
        )
        searcher = self.index.searcher()
        return [searcher.doc(address)["path"][0] for _score, address in searcher.search(query, limit).hits]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--verbose", action="store_true", help="print each question's ranks")
    parser.add_argument("--embeddings", default="", help="OpenAI-compatible base URL: also run with semantic search")
    parser.add_argument("--embeddings-model", default="all-MiniLM-L6-v2", help="model name sent to that endpoint")
    args = parser.parse_args(argv)
    spec = json.loads(args.questions.read_text())
    source = fetch(spec["package"])
    work = Path(tempfile.mkdtemp(prefix="repotalk-bench-retrieval-"))
    try:
        os.environ.update(
            {
                "REPOTALK_ENV": "development",
                "REPOTALK_DATA_DIR": str(work / "data"),
                "DATABASE_URL": f"sqlite:///{work / 'catalog.db'}",
                "INDEX_DIR": "",
                "LOG_LEVEL": "WARNING",
            }
        )
        from libs.common.db import Base, get_engine
        from libs.common.lifecycle import reset_process_state
        from libs.common.models.code_index import IndexedFile, Repository
        from services.code_search.engine import index_repository, search
        from services.code_search.index import get_index

        reset_process_state()
        Base.metadata.create_all(get_engine(), tables=[Repository.__table__, IndexedFile.__table__])  # type: ignore[list-item]
        summary = index_repository(source, name="corpus")
        print(f"indexed {summary.describe()}")
        indexed = sorted(get_index().indexed_paths("corpus"))
        baseline = Bm25Files(source, indexed)

        def run(label: str) -> tuple[list[int | None], list[int | None], list[int | None]]:
            ours_files: list[int | None] = []
            ours_functions: list[int | None] = []
            base_files: list[int | None] = []
            for item in spec["questions"]:
                files = set(item["files"])
                hits = search(item["q"], repos=["corpus"], limit=DEPTH).hits
                file_order = list(dict.fromkeys(h.path for h in hits))
                ours_files.append(ranks(file_order, files))
                function_rank = next(
                    (n for n, h in enumerate(hits, 1) if function_matches(h.symbol, h.path, item["functions"], files)),
                    None,
                )
                ours_functions.append(function_rank)
                base_files.append(ranks(baseline.search(item["q"], DEPTH), files))
                if args.verbose:
                    head = item["q"].splitlines()[0][:70]
                    print(f"  {label:<8} files {ours_files[-1]!s:>4} fn {function_rank!s:>4} "
                          f"bm25 {base_files[-1]!s:>4}  {head}")
            return ours_files, ours_functions, base_files

        ours_files, ours_functions, base_files = run("lexical")
        rows = [
            ("files: repotalk", metrics(ours_files)),
            ("files: BM25 whole files", metrics(base_files)),
            ("functions: repotalk", metrics(ours_functions)),
        ]
        if args.embeddings:
            from libs.common.settings import get_settings

            os.environ.update(EMBEDDINGS_URL=args.embeddings, EMBEDDINGS_MODEL=args.embeddings_model)
            get_settings.cache_clear()
            started = time.perf_counter()
            again = index_repository(source, name="corpus")  # nothing changed: only the vectors are made
            print(f"semantic: {again.embeddings.describe() if again.embeddings else 'off'} in "
                  f"{time.perf_counter() - started:.1f} s")
            hybrid_files, hybrid_functions, _ = run("hybrid")
            rows[1:1] = [("files: repotalk+semantic", metrics(hybrid_files))]
            rows.append(("functions: repotalk+sem.", metrics(hybrid_functions)))
        print(f"\nretrieval on {spec['package']}: {len(spec['questions'])} questions")
        header = f"{'':<26}" + "".join(f"{name:>8}" for name in [*(f'R@{k}' for k in KS), "MRR"])
        print(header)
        print("-" * len(header))
        for label, values in rows:
            print(f"{label:<26}" + "".join(f"{values[name]:>8.2f}" for name in [*(f'R@{k}' for k in KS), "MRR"]))
        print(f"{'functions: BM25 files':<26}" + f"{'n/a (whole files have no functions)':>40}")
        bm25 = next(values for label, values in rows if label.startswith("files: BM25"))
        gain = (rows[0][1]["R@5"] - bm25["R@5"]) * 100
        verdict = "meets" if gain >= 20 else "MISSES"
        print(f"\nfile recall@5 gain over BM25: {gain:+.0f} points (goal >= +20): {verdict}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
