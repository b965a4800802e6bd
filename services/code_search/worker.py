"""The code_search worker: answers search.requested with search.completed.

At start it opens the local index and indexes the repositories named in ``REPOS``
(incrementally: cheap when nothing changed since the last start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from libs.common import bus
from libs.common.events import Envelope, EventType, SearchCompleted, SearchRequested, Service, derived_id
from libs.common.settings import get_settings
from services.code_search.engine import index_repository, search
from services.code_search.index import get_index

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
    result = search(request.query, repos=request.repos or None, limit=request.limit, mode=request.mode)
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


HANDLERS: dict[EventType, Callable[[Envelope], None]] = {EventType.SEARCH_REQUESTED: handle_search_requested}


def startup() -> None:
    """Open the index; index the repositories of ``REPOS`` (one failing does not stop the others)."""
    get_index()
    for name, path in parse_repos(get_settings().search.repos):
        try:
            summary = index_repository(path, name=name)
        except Exception:
            log.exception("could not index %s", name or path)
            continue
        log.info("indexed %s", summary.describe())
