"""Tracing and metrics set up where each process starts (`repotalk gateway`, `worker`, `serve`).

A Celery prefork worker runs its tasks in child processes: tracing is set up in each child after the
fork (a span processor's thread does not survive one) and flushed when the child exits, and metrics go
through prometheus_client's multiprocess mode so that the parent's /metrics sums every child.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

from libs.common import telemetry
from libs.common.events import Service
from libs.common.settings import Settings


def prepare_worker_metrics(settings: Settings) -> None:
    """Under prefork, point prometheus_client at a directory shared by the worker's processes. Must run
    before anything imports prometheus_client (libs.common.bus does)."""
    if settings.broker.worker_pool != "prefork" or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = settings.telemetry.metrics_multiproc_dir
    if not path:
        path = tempfile.mkdtemp(prefix="repotalk-metrics-")
        # The parent's exit only: prefork children leave through os._exit and never run atexit.
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def start_worker_tracing(settings: Settings, service: Service) -> None:
    """Tracing for a worker: now (threads, solo), or in each prefork child; flushed at shutdown."""
    from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

    if settings.broker.worker_pool == "prefork":

        @worker_process_init.connect(weak=False)
        def _child_started(**_: Any) -> None:
            from libs.common import db

            db.reset()  # the parent's engine: the child's own is created (and traced) on first use
            telemetry.setup(service.value)

        @worker_process_shutdown.connect(weak=False)
        def _child_stopping(pid: int | None = None, **_: Any) -> None:
            from libs.common import metrics

            telemetry.shutdown()
            metrics.process_died(pid or os.getpid())

        return
    telemetry.setup(service.value)

    @worker_shutdown.connect(weak=False)
    def _stopping(**_: Any) -> None:
        telemetry.shutdown()
