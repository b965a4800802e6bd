"""The code_search worker: answers search.requested with search.completed, and keeps this replica's
index converged to the repository catalog (repo.index_requested, and a periodic reconcile).

At start it opens the local index, indexes the repositories named in ``REPOS`` (incrementally: cheap
when nothing changed since the last start), starts the reconcile loop and, with ``CODE_SEARCH_PORT``,
serves code_search's HTTP API (what the gateway forwards to in distributed mode).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from libs.common import bus, metrics, telemetry
from libs.common.events import (
    Envelope,
    EventType,
    RepoIndexRequested,
    SearchCompleted,
    SearchRequested,
    Service,
    derived_id,
)
from libs.common.settings import get_settings
from services.code_search.engine import index_repository, search
from services.code_search.index import get_index
from services.code_search.reconcile import reconciler
from services.code_search.server import ApiServer

log = logging.getLogger(__name__)

SERVICE = Service.CODE_SEARCH


def parse_repos(spec: str) -> list[tuple[str | None, Path]]:
    """``"name=path,name2=path2"`` or plain paths (named after their folder) -> [(name, path)]."""
    repos: list[tuple[str | None, Path]] = []
    for item in spec.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, path = item.partition("=")
        if sep and name.strip() and "/" not in name and "\\" not in name:
            repos.append((name.strip(), Path(path.strip()).expanduser()))
        else:
            repos.append((None, Path(item).expanduser()))
    return repos


def handle_search_requested(envelope: Envelope) -> None:
    request = envelope.data()
    assert isinstance(request, SearchRequested)
    with telemetry.span("code_search.search", attributes={"repotalk.search.kind": request.mode,
                                                          "repotalk.query.chars": len(request.query)}) as current:
        result = search(request.query, repos=request.repos or None, limit=request.limit, mode=request.mode)
        telemetry.set_attributes(current, **{
            "repotalk.search.hits": len(result.hits), "repotalk.search.took_ms": result.took_ms,
            "repotalk.search.rankers": ",".join(result.kinds), "repotalk.search.error_code": result.code or None,
        })
        outcome = "error" if result.error else ("hits" if result.hits else "empty")
        metrics.SEARCHES.labels(request.mode, outcome).inc()
        metrics.SEARCH_HITS.observe(len(result.hits))
        metrics.observe(metrics.SEARCH_LATENCY.labels(request.mode), result.took_ms / 1000)
    completed = SearchCompleted(
        request=request, hits=result.hits, took_ms=result.took_ms, kinds=result.kinds, error=result.error
    )
    log.info(
        "search for %s: %d hits in %.1f ms%s",
        envelope.correlation_id, len(result.hits), result.took_ms, f" ({result.code})" if result.code else "",
    )
    bus.publish(
        Envelope.new(
            completed,
            correlation_id=envelope.correlation_id,
            source=SERVICE.value,
            event_id=derived_id(envelope.correlation_id, EventType.SEARCH_COMPLETED),
        )
    )


def handle_index_requested(envelope: Envelope) -> None:
    """Converge now. The loop of this process does it when one runs here (the threads and solo pools);
    otherwise (a prefork child) the pass runs in this task, one at a time with the loop's (a file lock)."""
    request = envelope.data()
    assert isinstance(request, RepoIndexRequested)
    if reconciler.wake():
        return
    report = reconciler.run_once()
    log.info("reconciled after %s (generation %d): indexed %s, failed %s",
             request.repo, request.generation, report.indexed, report.failed)


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {
    EventType.SEARCH_REQUESTED: handle_search_requested,
    EventType.REPO_INDEX_REQUESTED: handle_index_requested,
}

_api: ApiServer | None = None


def startup() -> None:
    """Open the index; index the repositories of ``REPOS`` (one failing does not stop the others); start
    converging to the catalog; serve the HTTP API on ``CODE_SEARCH_PORT`` if set."""
    global _api
    index = get_index()
    settings = get_settings()
    for name, path in parse_repos(settings.search.repos):
        try:
            summary = index_repository(path, name=name)
        except Exception:
            log.exception("could not index %s", name or path)
            continue
        log.info("indexed %s", summary.describe())
    index.warm()
    reconciler.start()
    if settings.search.code_search_port and _api is None:
        _api = ApiServer(settings.app.host, settings.search.code_search_port)
        _api.start()
        log.info("code_search HTTP API on %s:%d", settings.app.host, settings.search.code_search_port)


def shutdown() -> None:
    """Stop the reconcile loop (after its current pass) and the HTTP API."""
    global _api
    if _api is not None:
        _api.stop()
        _api = None
    reconciler.stop()
