"""Where each service's worker module and HTTP routers live."""

from __future__ import annotations

import importlib
from types import ModuleType

from fastapi import APIRouter

from libs.common.events import Service

WORKER_MODULES: dict[Service, str] = {service: f"services.{service.value}.worker" for service in Service}
# Routers served beside the gateway's own (embedded mode mounts them all in one app).
ROUTER_MODULES: tuple[str, ...] = ("services.code_search.api", "services.analytics.api")


def worker_module(service: Service) -> ModuleType:
    return importlib.import_module(WORKER_MODULES[service])


def extra_routers() -> list[APIRouter]:
    return [importlib.import_module(name).router for name in ROUTER_MODULES]


def parse_service(name: str) -> Service:
    try:
        return Service(name.replace("-", "_"))
    except ValueError:
        valid = ", ".join(s.value for s in Service)
        raise ValueError(f"unknown service {name!r}; choose one of: {valid}") from None
