"""What the operator pages show, read from the shared database through libs/common models.

Repositories come from code_search's catalog (repositories, index_progress), turns and usage from
analytics' tables (analytics_turns, analytics_searches). Message bodies are read from the
processor's turns only when the operator asks for them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from libs.common import db
from libs.common.models.analytics import SearchQuery, TurnMetrics
from libs.common.models.code_index import IndexProgress, Repository
from libs.common.models.conversations import Turn
from libs.common.security import decrypt

TURN_LIMIT = 50
BODY_PREVIEW = 400
# Enough rows for stable percentiles over a day of a team's questions, few enough to stay cheap.
USAGE_ROW_LIMIT = 20_000
HOPS = ("queue_ms", "search_ms", "ai_ms", "persist_ms", "send_ms", "e2e_ms")
PERCENTILES = (0.5, 0.9, 0.95, 0.99)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def repositories() -> list[dict[str, Any]]:
    """Every indexed repository with its counts, skips and the progress of its current run."""
    with db.session_scope() as session:
        repos = session.scalars(select(Repository).order_by(Repository.name)).all()
        progress = {p.repo: p for p in session.scalars(select(IndexProgress)).all()}
        out = []
        for repo in repos:
            run = progress.get(repo.name)
            running = repo.status == "indexing"
            out.append({
                "name": repo.name,
                "source": repo.url or repo.root,
                "branch": repo.branch,
                "commit": repo.commit,
                "status": repo.status,
                "files": repo.file_count,
                "symbols": repo.symbol_count,
                "chunks": repo.chunk_count,
                "skipped": dict(sorted((repo.skipped or {}).items())),
                "error": repo.error,
                "indexed_at": _iso(repo.indexed_at),
                "progress": {
                    "phase": run.phase if run is not None else ("starting" if running else None),
                    "done": run.done if run is not None else 0,
                    "total": run.total if run is not None else 0,
                    "updated_at": _iso(run.updated_at) if run is not None else None,
                } if running or run is not None else None,
            })
        return out


@dataclass(frozen=True)
class RunState:
    """How far code_search has got with a request for one generation of a repository."""

    state: str  # running | done | failed
    detail: str | None = None


def run_state(name: str, generation: int) -> RunState:
    """``done`` once a replica finished ``generation`` (or a later one), ``failed`` when the run since the
    request failed (a request resets the status to pending), else ``running``."""
    with db.session_scope() as session:
        repo = session.get(Repository, name)
        if repo is None:
            return RunState("failed", "the repository was removed")
        if (repo.indexed_generation or 0) >= generation:
            return RunState("done", f"{repo.file_count} files, {repo.symbol_count} symbols, {repo.chunk_count} chunks")
        if repo.status == "failed":
            return RunState("failed", repo.error or "indexing failed")
        return RunState("running")


@dataclass
class TurnRow:
    correlation_id: str
    started_at: str | None
    status: str
    reply_kind: str | None
    search_mode: str | None
    search_kinds: str | None
    hits: int | None
    answerer: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    hops: dict[str, float | None]
    error: str | None
    question: str | None = None
    answer: str | None = None


def recent_turns(limit: int = TURN_LIMIT, with_bodies: bool = False) -> list[TurnRow]:
    """The latest turns, newest first; bodies only with ``with_bodies`` (the operator opted in)."""
    with db.session_scope() as session:
        metrics = session.scalars(
            select(TurnMetrics).order_by(TurnMetrics.started_at.desc()).limit(limit)
        ).all()
        rows = [
            TurnRow(
                correlation_id=m.correlation_id, started_at=_iso(m.started_at), status=m.status,
                reply_kind=m.reply_kind, search_mode=m.search_mode, search_kinds=m.search_kinds,
                hits=m.hit_count, answerer=m.answerer, model=m.model, input_tokens=m.input_tokens,
                output_tokens=m.output_tokens, cost_usd=m.cost_usd,
                hops={hop: getattr(m, hop) for hop in HOPS},
                error=f"{m.error_stage}: {m.error_reason}" if m.failed and m.error_stage else None,
            )
            for m in metrics
        ]
        if with_bodies and rows:
            turns = session.execute(
                select(Turn.correlation_id, Turn.question_enc, Turn.answer_enc)
                .where(Turn.correlation_id.in_([r.correlation_id for r in rows]))
            ).all()
            by_id = {t.correlation_id: t for t in turns}
            for row in rows:
                turn = by_id.get(row.correlation_id)
                if turn is not None:
                    row.question = _preview(turn.question_enc)
                    row.answer = _preview(turn.answer_enc) if turn.answer_enc else None
    return rows


def _preview(token: str) -> str:
    try:
        text = decrypt(token)
    except ValueError:
        return "(cannot be decrypted)"
    return text if len(text) <= BODY_PREVIEW else text[: BODY_PREVIEW - 1] + "…"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (as Postgres' percentile_cont)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass
class Usage:
    hours: int
    since: datetime
    turns: int = 0
    answered: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    per_hour: list[tuple[str, float]] = field(default_factory=list)
    latency: dict[str, dict[str, float | None]] = field(default_factory=dict)
    search_kinds: list[tuple[str, float]] = field(default_factory=list)
    search_modes: list[tuple[str, float]] = field(default_factory=list)
    cost_by_provider: list[tuple[str, float]] = field(default_factory=list)
    turns_by_answerer: list[tuple[str, float]] = field(default_factory=list)


def usage(hours: int = 24, now: datetime | None = None) -> Usage:
    """Counts, per-hour volume, latency percentiles per hop, search kinds and cost per provider."""
    now = now or db.utcnow()
    since = now - timedelta(hours=hours)
    result = Usage(hours=hours, since=since)
    with db.session_scope() as session:
        metrics = session.execute(
            select(TurnMetrics.started_at, TurnMetrics.status, TurnMetrics.cost_usd, TurnMetrics.answerer,
                   TurnMetrics.model, *(getattr(TurnMetrics, hop) for hop in HOPS))
            .where(TurnMetrics.started_at >= since)
            .order_by(TurnMetrics.started_at.desc())
            .limit(USAGE_ROW_LIMIT)
        ).all()
        searches = session.execute(
            select(SearchQuery.kinds, SearchQuery.mode).where(SearchQuery.occurred_at >= since).limit(USAGE_ROW_LIMIT)
        ).all()
    buckets = hours if hours <= 48 else hours // 24
    step = timedelta(hours=1) if hours <= 48 else timedelta(days=1)
    start = (now - step * (buckets - 1)).replace(minute=0, second=0, microsecond=0)
    if step == timedelta(days=1):
        start = start.replace(hour=0)
    counts = [0] * buckets
    hop_values: dict[str, list[float]] = defaultdict(list)
    cost: dict[str, float] = defaultdict(float)
    answerers: Counter[str] = Counter()
    for row in metrics:
        result.turns += 1
        result.answered += int(row.status == "answered")
        result.failed += int(row.status == "failed")
        result.cost_usd += row.cost_usd or 0.0
        index = int((row.started_at - start) / step)
        if 0 <= index < buckets:
            counts[index] += 1
        for hop in HOPS:
            value = getattr(row, hop)
            if value is not None:
                hop_values[hop].append(float(value))
        if row.answerer:
            provider = row.answerer + (f" ({row.model})" if row.model else "")
            cost[provider] += row.cost_usd or 0.0
            answerers[row.answerer] += 1
    label = "%H:00" if step == timedelta(hours=1) else "%d %b"
    result.per_hour = [((start + step * i).strftime(label), float(c)) for i, c in enumerate(counts)]
    for hop in HOPS:
        ordered = sorted(hop_values[hop])
        result.latency[hop] = {f"p{round(f * 100)}": percentile(ordered, f) for f in PERCENTILES}
        result.latency[hop]["n"] = float(len(ordered))
    kinds: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    for search in searches:
        for kind in filter(None, (search.kinds or "").split(",")):
            kinds[kind.strip()] += 1
        modes[search.mode] += 1
    result.search_kinds = [(k, float(v)) for k, v in kinds.most_common()]
    result.search_modes = [(k, float(v)) for k, v in modes.most_common()]
    result.cost_by_provider = sorted(((k, v) for k, v in cost.items()), key=lambda kv: -kv[1])
    result.turns_by_answerer = [(k, float(v)) for k, v in answerers.most_common()]
    return result
