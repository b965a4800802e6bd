"""A local HTTP server that speaks OpenAI's chat completions API, scripted per test.

The openai 3.x SDK sends through httpx2, which respx cannot intercept (FACTS.md), so tests point the
real SDK at this server with ``base_url``. Each request consumes the next scripted response; an
unscripted request gets a 500 whose message says so, which makes a test that calls more than it
meant to fail loudly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ScriptedResponse:
    status: int
    body: bytes
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeOpenAI:
    """``with FakeOpenAI() as fake: fake.reply("hi"); OpenAI(base_url=fake.base_url, ...)``."""

    def __init__(self) -> None:
        self._script: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------------

    def reply(
        self,
        content: str | None,
        *,
        model: str = "gpt-4o-mini-2024-07-18",
        prompt_tokens: int = 100,
        completion_tokens: int = 20,
        finish_reason: str = "stop",
        delay: float = 0.0,
    ) -> None:
        """A successful, non-streaming chat completion with the given content and usage."""
        body = {
            "id": f"chatcmpl-fake{len(self._script)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        self._push(ScriptedResponse(200, json.dumps(body).encode(), delay))

    def error(
        self,
        status: int,
        message: str = "The server had an error while processing your request.",
        *,
        error_type: str = "server_error",
        code: str | None = None,
        delay: float = 0.0,
        retry_after_ms: int | None = 1,
    ) -> None:
        """An HTTP error with OpenAI's error JSON. ``retry_after_ms`` keeps SDK retries fast in tests."""
        body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        headers = {"retry-after-ms": str(retry_after_ms)} if retry_after_ms is not None else {}
        self._push(ScriptedResponse(status, json.dumps(body).encode(), delay, headers))

    def malformed(self, body: bytes = b'{"id": "chatcmpl-broken", "choices": [', status: int = 200) -> None:
        """A response whose body is not valid JSON (a broken proxy, a truncated reply)."""
        self._push(ScriptedResponse(status, body))

    def raw(self, response: ScriptedResponse) -> None:
        self._push(response)

    def _push(self, response: ScriptedResponse) -> None:
        with self._lock:
            self._script.append(response)

    def _next(self) -> ScriptedResponse:
        with self._lock:
            if self._script:
                return self._script.popleft()
        body = {"error": {"message": "FakeOpenAI: no scripted response left", "type": "fake_error",
                          "param": None, "code": None}}
        return ScriptedResponse(500, json.dumps(body).encode(), headers={"retry-after-ms": "1"})

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        with self._lock:
            return len(self._script)

    # -- server ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorded = RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake._lock:
                    fake.requests.append(recorded)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(ScriptedResponse(404, json.dumps({"error": {
                        "message": f"unknown path {self.path}", "type": "invalid_request_error",
                        "param": None, "code": "unknown_url"}}).encode()))
                    return
                if not self.headers.get("Authorization", "").startswith("Bearer "):
                    self._send(ScriptedResponse(401, json.dumps({"error": {
                        "message": "missing bearer token", "type": "invalid_request_error",
                        "param": None, "code": "invalid_api_key"}}).encode()))
                    return
                response = fake._next()
                # Waiting on the stop event lets the server shut down without sitting out a delay.
                if response.delay and fake._stopping.wait(response.delay):
                    return
                self._send(response)

            def _send(self, response: ScriptedResponse) -> None:
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(response.body)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): nothing left to tell it

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        # A short poll interval makes shutdown() quick at the end of each test.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
