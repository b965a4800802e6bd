"""Helpers for end-to-end tests: a real HTTP server around the embedded app, free ports, waits."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import uvicorn

from repotalk.client import signed_webhook, webhook_params
from repotalk.embedded import embedded_workers, prepare
from repotalk.services import extra_routers
from services.code_search.engine import index_repository
from services.gateway.app import create_app

SAMPLE_REPO = Path(__file__).resolve().parents[1] / "fixtures" / "sample_repo"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def embedded_server() -> Iterator[str]:
    """The whole of repotalk in this process (as `repotalk serve` runs it), on a free port."""
    prepare()
    index_repository(SAMPLE_REPO, name="sample_repo")
    port = free_port()
    with embedded_workers():
        config = uvicorn.Config(create_app(extra_routers=extra_routers()), host="127.0.0.1", port=port,
                                log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: server.started, 20, "uvicorn to start")
            yield base_url
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def post_webhook(base_url: str, body: str, sender: str, message_sid: str, auth_token: str,
                 signature: str | None = None) -> httpx.Response:
    url = f"{base_url}/webhooks/twilio"
    params = webhook_params(body, sender, message_sid)
    headers = signed_webhook(url, params, auth_token)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return httpx.post(url, data=params, headers=headers, timeout=10)
