"""Embedded mode: every service in one process — the gateway under uvicorn, each worker in a thread,
the in-memory broker and a SQLite file. Same handlers and events as the distributed stack."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

from libs.common import bus
from libs.common.events import Service
from libs.common.schema import migrate
from repotalk.services import worker_module

log = logging.getLogger(__name__)


def register_all(app: Celery, services: tuple[Service, ...] = tuple(Service)) -> None:
    for service in services:
        module = worker_module(service)
        bus.register_service(app, module.SERVICE, module.HANDLERS, getattr(module, "BATCH_HANDLER", None))


@contextmanager
def embedded_workers(services: tuple[Service, ...] = tuple(Service)) -> Iterator[list[bus.EmbeddedWorker]]:
    """Start one worker thread per service on the process's broker; stop them on exit."""
    app = bus.get_celery()
    register_all(app, services)
    for service in services:
        worker_module(service).startup()
    workers: list[bus.EmbeddedWorker] = []
    try:
        for service in services:
            worker = bus.EmbeddedWorker(app, service)
            worker.start()
            workers.append(worker)
        yield workers
    finally:
        bus.flush_batches()
        for worker in workers:
            worker.stop()
        for service in services:
            # Background work a worker module started (code_search's reconcile loop and HTTP API).
            stop = getattr(worker_module(service), "shutdown", None)
            if stop is not None:
                stop()


def prepare() -> None:
    """Bring the embedded database to the current schema."""
    migrate()
