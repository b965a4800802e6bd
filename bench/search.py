r"""bench/search: code_search on real source distributions, side by side with ripgrep on the same tree.

The corpus is a pinned PyPI source distribution (SQLAlchemy by default, about 1M lines with its docs
and tests), downloaded once with ``pip download`` into ``bench/corpus/downloads`` and unpacked into
``bench/corpus/src`` (both git-ignored; reused by later runs). It measures:

- a full index from nothing: time and size on disk;
- a one-file update (a function appended to one file, re-index): time, and the index size after
  several of them (an update must not make the index grow beyond the new text);
- regex, symbol and free-text search latency p50/p95 (ripgrep: the same pattern, ``(def|class) name``,
  and the question's words as an alternation — what a developer would type instead);
- 50 searches at once (threads in one process, as the API serves them): p95 per search; ripgrep: 50
  processes at once;
- files skipped, by reason (ripgrep's own file count beside the indexed one).

Regex, like with like: ripgrep's figure is ``rg -n PATTERN TREE`` over the same tree (every match,
its default threads); ours is the whole ``search(..., mode="pattern")`` call, which runs ripgrep over
the indexed files only — just the files whose trigram bitmap holds every trigram of the literal text
the pattern fixes (``isolation_level``, ``TODO|FIXME|XXX``: any alternative's), else the files whose
chunks hold every whole word it fixes, else the tree — and ranks the first matches (definitions
first, two per file, enclosing symbols). The same queries come back in every round: nothing is
cached between searches but the index's own per-commit tables (bitmaps, file lists, the ranking
fields of the documents already read); the "first after a commit" line is each question's first
search after the index changed, with those tables empty.

ChunkHound (regex only, no embeddings) runs beside us when ``--chunkhound VENV`` (or CHUNKHOUND_VENV)
names a virtualenv with it (``python -m venv /tmp/chvenv && /tmp/chvenv/bin/pip install chunkhound
duckdb-extension-vss==1.5.4``; the vss extension is installed from that wheel so that no database open
needs the internet); without one its published figures are printed as a labelled reference.

    .venv/bin/python bench/search.py            # SQLAlchemy, full rounds
    .venv/bin/python bench/search.py --quick    # fewer rounds (about a minute)
    .venv/bin/python bench/search.py --package django==5.1.4 --package sqlalchemy==2.0.36
    .venv/bin/python bench/search.py --tree /path/to/any/checkout
    .venv/bin/python bench/search.py --chunkhound /tmp/chvenv
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402

CORPUS = ROOT / "bench" / "corpus"
DOWNLOADS = CORPUS / "downloads"
SOURCES = CORPUS / "src"
RESULTS = ROOT / "bench" / "results"
DEFAULT_PACKAGES = ("sqlalchemy==2.0.36",)

# ChunkHound's figures as published in the issue (measured on SQLAlchemy without embeddings).
CHUNKHOUND = {
    "index_s": "49-89",
    "skipped_large": "30 (silently)",
    "regex_ms": "108-363",
}

REGEX_PATTERNS = [
    r"def \w+_execute\(",
    r"class \w+Session\b",
    r"raise exc\.InvalidRequestError\(",
    r"@util\.memoized_property",
    r"isolation_level",
    r"^from \.\. import",
    r"TODO|FIXME|XXX",
    r"\bpool_pre_ping\b",
]
SYMBOL_QUERIES = [
    "`Session.execute`",
    "`create_engine`",
    "`QueuePool`",
    "where is `_connection_for_bind` defined",
    "`Inspector.get_columns`",
    "`declarative_base`",
    "`Query.filter_by`",
    "`TypeDecorator.process_bind_param`",
]
TEXT_QUERIES = [
    "how does the connection pool recycle stale connections?",
    "where are bound parameters escaped for the sqlite dialect",
    "how is the unit of work flush ordered",
    "eager loading of relationships with selectinload",
    "what happens when a savepoint is rolled back",
    "how are server side cursors streamed",
    "reflect table columns from postgresql",
    "hybrid property expression on the class",
]


def _ms(seconds: float) -> float:
    return seconds * 1000


# -- corpus -----------------------------------------------------------------------------------------


def _pip() -> list[str]:
    return [sys.executable, "-m", "pip"]


def _archive_for(spec: str) -> Path | None:
    name, _, version = spec.partition("==")
    wanted = {name.lower().replace("-", "_"), name.lower()}
    for archive in sorted(DOWNLOADS.glob("*")):
        stem = archive.name.lower()
        for prefix in wanted:
            if stem.startswith(f"{prefix}-{version}.".lower()) and stem.endswith((".tar.gz", ".zip")):
                return archive
    return None


def fetch(spec: str) -> Path:
    """The unpacked source distribution of ``name==version`` (downloaded and unpacked once)."""
    if "==" not in spec:
        raise SystemExit(f"pin the package version: {spec}==<version>")
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    archive = _archive_for(spec)
    if archive is None:
        name = spec.split("==")[0]
        print(f"downloading {spec} (source distribution) ...", flush=True)
        # --no-binary for this package only: build requirements may still come as wheels.
        subprocess.run(
            [*_pip(), "download", "--quiet", "--no-deps", "--no-binary", name, spec, "-d", str(DOWNLOADS)],
            check=True,
        )
        archive = _archive_for(spec)
        if archive is None:
            raise SystemExit(f"pip downloaded no source distribution for {spec}")
    target = SOURCES / archive.name.removesuffix(".tar.gz").removesuffix(".zip")
    if not target.is_dir():
        SOURCES.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=SOURCES))
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(staging, filter="data")
        (inner,) = list(staging.iterdir())
        inner.rename(target)
        staging.rmdir()
    return target


def corpus_tree(specs: Sequence[str], work: Path) -> Path:
    """One tree holding every package (a copy, so that updates never touch the cache)."""
    tree = work / "corpus"
    tree.mkdir()
    for spec in specs:
        source = fetch(spec)
        shutil.copytree(source, tree / source.name, symlinks=True)
    return tree


def count_lines(tree: Path) -> tuple[int, int]:
    files = lines = 0
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            with open(path, "rb") as handle:
                lines += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return files, lines


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- ripgrep ----------------------------------------------------------------------------------------


def rg_binary() -> str:
    beside = Path(sys.executable).parent / "rg"
    if beside.is_file():
        return str(beside)
    found = shutil.which("rg")
    if not found:
        raise SystemExit("ripgrep is missing: pip install --only-binary=:all: ripgrep==14.1.0")
    return found


def rg_run(args: Sequence[str], tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run([rg_binary(), "--no-config", *args, str(tree)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def rg_words(question: str) -> str:
    from services.code_search import query as query_parser

    parsed = query_parser.parse(question)
    words = [w for w in [*parsed.identifiers, *parsed.words] if len(w) > 2] or [question.split()[0]]
    return "|".join(dict.fromkeys(words))


def rg_symbol(question: str) -> str:
    from services.code_search import query as query_parser

    parsed = query_parser.parse(question)
    name = (parsed.identifiers or parsed.words or ["x"])[-1]
    return rf"(def|class) {name}\b"


# -- measurements -----------------------------------------------------------------------------------


@dataclass
class Line:
    metric: str
    ours: float | str
    rg: float | str | None = None
    goal: str = ""
    ok: bool | None = None
    unit: str = "ms"
    lower_is_better: bool = True

    def ratio(self) -> str:
        if isinstance(self.ours, str) or not isinstance(self.rg, float | int) or not self.rg:
            return ""
        return f"{self.ours / self.rg:.2f}x"


@dataclass
class Report:
    title: str
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.lines.append(Line(*args, **kwargs))

    def print(self) -> None:
        def fmt(value: float | str | None, unit: str) -> str:
            if value is None:
                return ""
            if isinstance(value, str):
                return value
            if not unit:
                return f"{value:,.0f}"
            return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"

        print(f"\n{self.title}")
        header = f"{'metric':<38} {'repotalk':>14} {'rg':>14} {'ratio':>8}  {'goal':<22} verdict"
        print(header)
        print("-" * len(header))
        for line in self.lines:
            verdict = "" if line.ok is None else ("meets" if line.ok else "MISSES")
            print(
                f"{line.metric:<38} {fmt(line.ours, line.unit):>14} {fmt(line.rg, line.unit):>14} "
                f"{line.ratio():>8}  {line.goal:<22} {verdict}"
            )
        for note in self.notes:
            print(f"  {note}")

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "lines": [line.__dict__ for line in self.lines], "notes": self.notes}


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def latencies(queries: Sequence[str], run: Callable[[str], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for query in queries:
            seconds, _ = timed(lambda q=query: run(q))  # type: ignore[misc]
            out.append(_ms(seconds))
    return out


def concurrent(count: int, run: Callable[[int], Any]) -> list[float]:
    """``count`` calls released at once; each one's own latency."""
    barrier = threading.Barrier(count)
    out: list[float] = [0.0] * count

    def one(position: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        run(position)
        out[position] = _ms(time.perf_counter() - started)

    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(one, range(count)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (same corpus)")
    parser.add_argument("--package", action="append", help="name==version of a PyPI sdist (repeatable)")
    parser.add_argument("--tree", type=Path, help="benchmark this directory instead of PyPI packages")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the figures here (default bench/results/)")
    parser.add_argument(
        "--chunkhound",
        type=Path,
        default=os.environ.get("CHUNKHOUND_VENV") or None,
        help="virtualenv with chunkhound installed: index and regex-search the same tree with it",
    )
    args = parser.parse_args(argv)

    rounds = 3 if args.quick else 10
    updates = 3 if args.quick else 8
    concurrent_rounds = 2 if args.quick else 5
    work = Path(tempfile.mkdtemp(prefix="repotalk-bench-search-"))
    try:
        if args.tree:
            tree = work / "corpus"
            shutil.copytree(args.tree, tree, symlinks=True)
            label = str(args.tree)
        else:
            specs = args.package or list(DEFAULT_PACKAGES)
            tree = corpus_tree(specs, work)
            label = " + ".join(specs)
        return run(
            tree, label, work, rounds, updates, concurrent_rounds, args.concurrency, args.json, args.chunkhound
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(
    tree: Path,
    label: str,
    work: Path,
    rounds: int,
    updates: int,
    concurrent_rounds: int,
    concurrency: int,
    json_path: Path | None,
    chunkhound_venv: Path | None = None,
) -> int:
    os.environ.update(
        {
            "REPOTALK_ENV": "development",
            "REPOTALK_DATA_DIR": str(work / "data"),
            "DATABASE_URL": f"sqlite:///{work / 'catalog.db'}",
            "BROKER_URL": "memory://localhost/",
            "INDEX_DIR": "",
            "LOG_LEVEL": "WARNING",
        }
    )
    from libs.common.db import Base, get_engine
    from libs.common.lifecycle import reset_process_state
    from libs.common.models.code_index import IndexedFile, Repository
    from libs.common.settings import get_settings
    from services.code_search.engine import index_repository, search

    reset_process_state()
    Base.metadata.create_all(get_engine(), tables=[Repository.__table__, IndexedFile.__table__])  # type: ignore[list-item]
    settings = get_settings()
    files, lines = count_lines(tree)
    print(f"corpus: {label}: {files:,} files, {lines:,} lines, {du(tree) / 1e6:.1f} MB", flush=True)

    report = Report(f"code_search vs ripgrep on {label} ({lines / 1e6:.2f}M lines)")
    name = "corpus"

    # Full index, from nothing. ripgrep has no index: its figure is one full scan of the tree.
    index_seconds, summary = timed(lambda: index_repository(tree, name=name))
    index_dir = settings.index_dir
    size = du(index_dir)
    scan = min(rg_run(["-c", "-e", "zqxjv_never_matches"], tree) for _ in range(3))
    report.add("full index (s) / rg full scan (s)", index_seconds, scan, "SQLAlchemy <= 5 s", index_seconds <= 5,
               unit="s")
    report.add("index size (MB) / corpus (MB)", size / 1e6, du(tree) / 1e6, unit="MB")
    print(f"indexed: {summary.describe()}", flush=True)

    # One-file update: append a function to a big, central file and re-index.
    target = _update_target(tree)
    original = target.read_bytes()
    update_times = []
    sizes = [size]
    for number in range(updates):
        with open(target, "ab") as handle:
            handle.write(f"\n\ndef bench_update_{number}():\n    return {number}\n".encode())
        update_seconds, update = timed(lambda: index_repository(tree, name=name))
        if update.indexed != 1:
            raise SystemExit(f"an update re-indexed {update.indexed} files instead of 1")
        update_times.append(update_seconds)
        sizes.append(du(index_dir))
    growth = (sizes[-1] - sizes[0]) / 1e6
    p50_update = statistics.median(update_times)
    report.add(
        f"one-file update p50 (s), {updates} runs", p50_update, None, "<= 0.3 s", p50_update <= 0.3, unit="s"
    )
    report.add("one-file update max (s)", max(update_times), None, unit="s")
    report.add(
        f"index growth after {updates} updates", growth, None, "no growth (< 1% )",
        growth <= 0.01 * sizes[0] / 1e6, unit="MB",
    )
    report.notes.append(
        f"update target {target.relative_to(tree)}; sizes (MB): " + ", ".join(f"{s / 1e6:.2f}" for s in sizes)
    )
    target.write_bytes(original)
    index_repository(tree, name=name)

    # Searches: one warm-up each, then rounds.
    def ours(mode: str) -> Callable[[str], Any]:
        def go(query: str) -> Any:
            result = search(query, repos=[name], limit=10, mode=mode)
            if result.error:
                raise SystemExit(f"search {query!r} failed: {result.error}")
            return result

        return go

    regex_mine: list[float] = []
    cold: list[float] = []
    for query in [*REGEX_PATTERNS, *SYMBOL_QUERIES, *TEXT_QUERIES]:
        seconds, _ = timed(
            lambda q=query: search(q, repos=[name], mode="pattern" if q in REGEX_PATTERNS else "question")  # type: ignore[misc]
        )
        if query not in REGEX_PATTERNS:
            cold.append(_ms(seconds))
    searches: list[tuple[str, list[str], str, Callable[[str], list[str]], str, float | None]] = [
        ("regex", REGEX_PATTERNS, "pattern", lambda q: ["-n", "-e", q], "p50 <= rg", None),
        ("symbol", SYMBOL_QUERIES, "question", lambda q: ["-n", "-e", rg_symbol(q)], "", None),
        ("free text", TEXT_QUERIES, "question", lambda q: ["-n", "-i", "-e", rg_words(q)], "p95 <= 20 ms", 20.0),
    ]
    for title, queries, mode, rg_args, goal, target_p95 in searches:
        mine = latencies(queries, ours(mode), rounds)
        if title == "regex":
            regex_mine = mine
        theirs = [
            _ms(rg_run(rg_args(q), tree))
            for _ in range(max(1, rounds // 2))
            for q in queries
        ]
        p50, p95 = percentile(mine, 50), percentile(mine, 95)
        rg50, rg95 = percentile(theirs, 50), percentile(theirs, 95)
        ok50 = p50 <= rg50 if title == "regex" else None
        report.add(f"{title} p50 (ms)", p50, rg50, goal if title == "regex" else "", ok50)
        ok95 = p95 <= target_p95 if target_p95 else None
        report.add(f"{title} p95 (ms)", p95, rg95, goal if target_p95 else "", ok95)

    report.add("question p50, first after a commit (ms)", percentile(cold, 50), None)

    # Concurrency: a mix of questions, released at once.
    mixed = [*TEXT_QUERIES, *SYMBOL_QUERIES]
    together: list[float] = []
    for _ in range(concurrent_rounds):
        together += concurrent(concurrency, lambda i: ours("question")(mixed[i % len(mixed)]))
    rg_together: list[float] = []
    for _ in range(max(1, concurrent_rounds // 2)):
        rg_together += concurrent(
            concurrency, lambda i: rg_run(["-n", "-i", "-e", rg_words(TEXT_QUERIES[i % len(TEXT_QUERIES)])], tree)
        )
    c95 = percentile(together, 95)
    report.add(f"{concurrency} concurrent searches p95 (ms)", c95, percentile(rg_together, 95), "<= 100 ms", c95 <= 100)

    # Skipped files, by reason. ripgrep's count: the files it would search with its default filters.
    rg_files = subprocess.run(
        [rg_binary(), "--no-config", "--files", str(tree)], stdout=subprocess.PIPE, check=False
    ).stdout.count(b"\n")
    report.add("files indexed / rg --files", float(summary.files), float(rg_files), unit="")
    for reason, count in sorted(summary.skipped.items()):
        report.add(f"  skipped: {reason}", float(count), None, unit="")
    timed_out = summary.skipped.get("timeout", 0)
    report.add("  skipped for time", float(timed_out), None, "0", timed_out == 0, unit="")

    chunkhound = chunkhound_report(chunkhound_venv, tree, work, index_seconds, percentile(regex_mine, 50), rounds)
    report.print()
    if chunkhound is not None:
        chunkhound.print()
    print("\nChunkHound (reference: published figures for SQLAlchemy)")
    print(f"  full index without embeddings: {CHUNKHOUND['index_s']} s")
    print(f"  large files skipped: {CHUNKHOUND['skipped_large']}")
    print(f"  regex in-engine: {CHUNKHOUND['regex_ms']} ms")
    print("  (repotalk's figures for the same corpus are in the table above)")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = json_path or RESULTS / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"corpus": label, "files": files, "lines": lines, **report.as_json()}, indent=2))
    print(f"\nfigures written to {out}")
    return 0


# -- ChunkHound -------------------------------------------------------------------------------------

CHUNKHOUND_INDEX_TIMEOUT = 900.0


def _chunkhound_missing(venv: Path | None) -> str | None:
    if venv is None:
        return "not asked for (--chunkhound VENV or CHUNKHOUND_VENV)"
    if not (venv / "bin" / "chunkhound").is_file():
        return f"no chunkhound in {venv} (pip install chunkhound duckdb-extension-vss==1.5.4 there)"
    return None


def _chunkhound_vss(venv: Path) -> None:
    """ChunkHound runs ``INSTALL vss`` on every open: installed from the wheel's file, it needs no internet."""
    script = (
        "import duckdb, glob, os, duckdb_extension_vss as m\n"
        "files = glob.glob(os.path.join(os.path.dirname(m.__file__), 'extensions', '*', 'vss.duckdb_extension'))\n"
        "duckdb.connect().execute(f\"INSTALL '{files[0]}'\")\n"
    )
    subprocess.run([str(venv / "bin" / "python"), "-c", script], check=True, capture_output=True)


def chunkhound_report(
    venv: Path | None, tree: Path, work: Path, our_index_s: float, our_regex_p50: float, rounds: int
) -> Report | None:
    missing = _chunkhound_missing(venv)
    if missing is not None:
        print(f"\nChunkHound skipped: {missing}")
        return None
    assert venv is not None
    binary = str(venv / "bin" / "chunkhound")
    report = Report("ChunkHound (regex only, no embeddings) on the same tree, same run")
    try:
        _chunkhound_vss(venv)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"\nChunkHound skipped: the vss extension could not be installed from its wheel ({exc})")
        return None
    db = work / "chunkhound.duckdb"
    env = {**os.environ, "CHUNKHOUND_EMBEDDING__PROVIDER": ""}
    started = time.perf_counter()
    try:
        indexed = subprocess.run(
            [binary, "index", str(tree), "--no-embeddings", "--db", str(db)],
            capture_output=True, text=True, timeout=CHUNKHOUND_INDEX_TIMEOUT, env=env, cwd=tree,
        )
    except subprocess.TimeoutExpired:
        print(f"\nChunkHound skipped: indexing took more than {CHUNKHOUND_INDEX_TIMEOUT:g} s")
        return None
    index_s = time.perf_counter() - started
    if indexed.returncode != 0:
        print(f"\nChunkHound skipped: its index exited {indexed.returncode}: {indexed.stderr.strip()[-300:]}")
        return None
    report.add("full index (s) / ours (s)", index_s, our_index_s, unit="s")
    # Through its CLI: each search is a process that opens the database (what a script would do).
    cli: list[float] = []
    for _ in range(max(1, rounds // 5)):
        for pattern in REGEX_PATTERNS:
            seconds, _ = timed(
                lambda p=pattern: subprocess.run(  # type: ignore[misc]
                    [binary, "search", "--regex", p, str(tree), "--db", str(db), "--page-size", "10"],
                    capture_output=True, env=env, cwd=tree, timeout=120,
                )
            )
            cli.append(_ms(seconds))
    report.add("regex p50 through its CLI (ms) / ours", percentile(cli, 50), our_regex_p50)
    report.notes.append("'rg' column here: repotalk's own figure; ChunkHound's CLI pays a process start per search")
    report.notes.append(f"indexer's last lines: {' | '.join(indexed.stdout.strip().splitlines()[-3:])[:300]}")
    return report


def _update_target(tree: Path) -> Path:
    """A central, large Python file (SQLAlchemy's orm/session.py when present)."""
    preferred = sorted(tree.glob("*/lib/sqlalchemy/orm/session.py"))
    if preferred:
        return preferred[0]
    candidates = sorted((p for p in tree.rglob("*.py") if p.is_file()), key=lambda p: p.stat().st_size)
    if not candidates:
        raise SystemExit("no Python file to update in the corpus")
    return candidates[len(candidates) * 9 // 10]


if __name__ == "__main__":
    raise SystemExit(main())
