"""Where each service's worker module and HTTP routers live."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from fastapi import APIRouter

from libs.common.events import Service
from libs.common.settings import Settings, get_settings

WORKER_MODULES: dict[Service, str] = {service: f"services.{service.value}.worker" for service in Service}
# Routers served beside the gateway's own (embedded mode mounts them all in one app).
ROUTER_MODULES: tuple[str, ...] = ("services.code_search.api", "services.analytics.api")
# code_search's routes need the index, which lives with the code_search workers: with CODE_SEARCH_URL
# the gateway mounts the same routes forwarding there instead of answering from its own disk.
REMOTE_ROUTER_MODULES: dict[str, str] = {"services.code_search.api": "services.code_search.remote"}

log = logging.getLogger(__name__)


def worker_module(service: Service) -> ModuleType:
    return importlib.import_module(WORKER_MODULES[service])


def router_modules(settings: Settings | None = None) -> list[str]:
    """The modules whose routers the HTTP process mounts, for this configuration."""
    settings = settings or get_settings()
    if settings.search.code_search_url:
        return [REMOTE_ROUTER_MODULES.get(name, name) for name in ROUTER_MODULES]
    if not settings.broker.url.startswith("memory://"):
        log.warning("CODE_SEARCH_URL is not set: /api/v1/search, /api/v1/repos and /webhooks/git are served from "
                    "this process's own index, which no code_search worker sees")
    return list(ROUTER_MODULES)


def extra_routers(settings: Settings | None = None) -> list[APIRouter]:
    return [importlib.import_module(name).router for name in router_modules(settings)]


def parse_service(name: str) -> Service:
    try:
        return Service(name.replace("-", "_"))
    except ValueError:
        valid = ", ".join(s.value for s in Service)
        raise ValueError(f"unknown service {name!r}; choose one of: {valid}") from None
