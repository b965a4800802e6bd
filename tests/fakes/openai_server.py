"""A local HTTP server that speaks OpenAI's chat completions API, scripted per test.

The openai 3.x SDK sends through httpx2, which respx cannot intercept (FACTS.md), so tests point the
real SDK at this server with ``base_url``. Each request consumes the next scripted response; an
unscripted request gets a 500 whose message says so, which makes a test that calls more than it
meant to fail loudly.

``ScriptedServer`` is the machinery shared with the Anthropic fake (tests/fakes/anthropic_server.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


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


def _json(status: int, body: object, headers: dict[str, str] | None = None, delay: float = 0.0) -> ScriptedResponse:
    return ScriptedResponse(status, json.dumps(body).encode(), delay, headers or {})


class ScriptedServer:
    """A threaded HTTP server on 127.0.0.1 answering POSTs to ``path`` from a script, recording requests."""

    path = "/"
    thread_name = "fake-server"

    def __init__(self) -> None:
        self._script: deque[ScriptedResponse] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what subclasses say -----------------------------------------------------------------------

    def refuse(self, headers: dict[str, str]) -> ScriptedResponse | None:
        """A response for a request the real API would refuse before looking at it (auth, version)."""
        return None

    def unknown_path(self, path: str) -> ScriptedResponse:
        return _json(404, {"error": {"message": f"unknown path {path}"}})

    def unscripted(self) -> ScriptedResponse:
        return _json(500, {"error": {"message": f"{type(self).__name__}: no scripted response left"}})

    def respond(self, request: RecordedRequest) -> ScriptedResponse:
        """The next scripted response; a server that computes its answers overrides this."""
        return self._next()

    # -- scripting ---------------------------------------------------------------------------------

    def raw(self, response: ScriptedResponse) -> None:
        self._push(response)

    def malformed(self, body: bytes = b'{"id": "broken", "content": [', status: int = 200) -> None:
        """A response whose body is not valid JSON (a broken proxy, a truncated reply)."""
        self._push(ScriptedResponse(status, body))

    def _push(self, response: ScriptedResponse) -> None:
        with self._lock:
            self._script.append(response)

    def _next(self) -> ScriptedResponse:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.unscripted()

    @property
    def pending(self) -> int:
        """Scripted responses not consumed yet."""
        with self._lock:
            return len(self._script)

    # -- server ------------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle on, the body waits for the client's
            # delayed ACK (40 ms a request on Linux), which would swamp what the benchmarks measure.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = RecordedRequest("POST", self.path, headers, body)
                with fake._lock:
                    fake.requests.append(recorded)
                if self.path.rstrip("/") != fake.path:
                    self._send(fake.unknown_path(self.path))
                    return
                refused = fake.refuse(headers)
                if refused is not None:
                    self._send(refused)
                    return
                response = fake.respond(recorded)
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
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
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


def openai_error(status: int, message: str, error_type: str, code: str | None,
                  headers: dict[str, str] | None = None, delay: float = 0.0) -> ScriptedResponse:
    return _json(status, {"error": {"message": message, "type": error_type, "param": None, "code": code}},
                 headers, delay)


class OpenAICompatible(ScriptedServer):
    """What every OpenAI-style endpoint shares: ``/v1`` base URL, bearer auth, OpenAI's error JSON."""

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def refuse(self, headers: dict[str, str]) -> ScriptedResponse | None:
        if not headers.get("authorization", "").startswith("Bearer "):
            return openai_error(401, "missing bearer token", "invalid_request_error", "invalid_api_key")
        return None

    def unknown_path(self, path: str) -> ScriptedResponse:
        return openai_error(404, f"unknown path {path}", "invalid_request_error", "unknown_url")


class FakeOpenAI(OpenAICompatible):
    """``with FakeOpenAI() as fake: fake.reply("hi"); OpenAI(base_url=fake.base_url, ...)``.

    Serves any OpenAI-compatible client as well (the `local` provider: Ollama, vLLM, llama.cpp)."""

    path = "/v1/chat/completions"
    thread_name = "fake-openai"

    def unscripted(self) -> ScriptedResponse:
        return openai_error(500, "FakeOpenAI: no scripted response left", "fake_error", None,
                             {"retry-after-ms": "1"})

    def reply(self, content: str | None, **options: Any) -> None:
        """A successful, non-streaming chat completion with the given content and usage (see ``completion``)."""
        self._push(self.completion(content, **options))

    def completion(
        self,
        content: str | None,
        *,
        model: str = "gpt-4o-mini-2024-07-18",
        prompt_tokens: int = 100,
        completion_tokens: int = 20,
        finish_reason: str = "stop",
        delay: float = 0.0,
    ) -> ScriptedResponse:
        """The response ``reply`` scripts (for servers that answer without a script)."""
        body = {
            "id": f"chatcmpl-fake{len(self.requests)}-{self.pending}",
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
        return _json(200, body, delay=delay)

    def error(
        self,
        status: int,
        message: str = "The server had an error while processing your request.",
        *,
        error_type: str = "server_error",
        code: str | None = None,
        delay: float = 0.0,
        retry_after: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        """An HTTP error with OpenAI's error JSON, and the retry headers OpenAI sends with 429s."""
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        self._push(openai_error(status, message, error_type, code, headers, delay))

    def context_too_long(self, tokens: int = 140_000, limit: int = 128_000) -> None:
        """OpenAI's answer to a prompt longer than the model's context window."""
        self.error(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
            f"{tokens} tokens. Please reduce the length of the messages.",
            error_type="invalid_request_error",
            code="context_length_exceeded",
        )

    def malformed(self, body: bytes = b'{"id": "chatcmpl-broken", "choices": [', status: int = 200) -> None:
        super().malformed(body, status)
