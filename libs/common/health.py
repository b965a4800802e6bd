"""Readiness checks shared by every process, and the small HTTP server workers use for probes and
Prometheus scrapes.

/health: the process is alive. /ready: the database answers and the broker is reachable. Each check
has a deadline, so a hung dependency makes the probe fail instead of hanging it.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from libs.common import db
from libs.common.settings import get_settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")


def broker_reachable(url: str, timeout: float = CHECK_TIMEOUT) -> bool:
    if url.startswith("memory://"):
        return True
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            try:
                return bool(client.ping())
            finally:
                client.close()
        from kombu import Connection

        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception as exc:
        log.warning("readiness: broker unreachable (%s)", type(exc).__name__)
        return False


def readiness() -> dict[str, bool]:
    """Which dependencies answer within the deadline: {"database": ..., "broker": ...}."""
    settings = get_settings()
    timeout = min(CHECK_TIMEOUT, settings.broker.publish_timeout)
    futures = {
        "database": _pool.submit(db.ping),
        "broker": _pool.submit(broker_reachable, settings.broker.url, timeout),
    }
    results = {}
    for name, future in futures.items():
        try:
            results[name] = bool(future.result(timeout=CHECK_TIMEOUT + 1))
        except (FutureTimeout, Exception):
            results[name] = False
    return results


class _ProbeHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: keep logs quiet
        return

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"status": "ok"})
        elif self.path == "/ready":
            checks = readiness()
            failed = [name for name, ok in checks.items() if not ok]
            if failed:
                self._reply(503, {"status": "unavailable", "failed": failed})
            else:
                self._reply(200, {"status": "ready", "checks": dict.fromkeys(checks, "ok")})
        elif self.path == "/metrics":
            from libs.common.metrics import exposition, register_queue_depth

            register_queue_depth()
            body, content_type = exposition(self.headers.get("Accept"))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._reply(404, {"detail": "not found: try /health, /ready or /metrics"})

    def _reply(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_probes(host: str, port: int) -> ThreadingHTTPServer:
    """Start /health, /ready and /metrics on host:port in a daemon thread (a worker's probe endpoint)."""
    server = ThreadingHTTPServer((host, port), _ProbeHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
