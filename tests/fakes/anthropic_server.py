"""A local HTTP server that speaks Anthropic's Messages API (``POST /v1/messages``), scripted per test.

The anthropic 2.x SDK sends through httpx2 (FACTS.md), so tests point the real SDK at this server with
``base_url``. It sends ``Authorization: Bearer`` (or ``x-api-key``) and ``anthropic-version``; a request
without them is refused as the real API would.
"""

from __future__ import annotations

import json

from tests.fakes.openai_server import ScriptedResponse, ScriptedServer


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None,
           delay: float = 0.0) -> ScriptedResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake"}
    return ScriptedResponse(status, json.dumps(body).encode(), delay, headers or {})


# Anthropic's error type per status, as documented for the Messages API.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(ScriptedServer):
    """``with FakeAnthropic() as fake: fake.reply("hi"); Anthropic(base_url=fake.base_url, ...)``."""

    path = "/v1/messages"
    thread_name = "fake-anthropic"

    @property
    def base_url(self) -> str:
        return self.origin

    def refuse(self, headers: dict[str, str]) -> ScriptedResponse | None:
        if not (headers.get("authorization", "").startswith("Bearer ") or headers.get("x-api-key")):
            return _error(401, "authentication_error", "missing credentials")
        if not headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        return None

    def unknown_path(self, path: str) -> ScriptedResponse:
        return _error(404, "not_found_error", f"unknown path {path}")

    def unscripted(self) -> ScriptedResponse:
        return _error(500, "api_error", "FakeAnthropic: no scripted response left")

    def reply(
        self,
        text: str,
        *,
        model: str = "claude-haiku-4-5-20251001",
        input_tokens: int = 100,
        output_tokens: int = 20,
        stop_reason: str = "end_turn",
        delay: float = 0.0,
    ) -> None:
        """A successful, non-streaming Message with one text block and the given usage."""
        body = {
            "id": f"msg_fake{len(self.requests)}{self.pending}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text, "citations": None}] if text else [],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
            },
        }
        self._push(ScriptedResponse(200, json.dumps(body).encode(), delay))

    def error(self, status: int, message: str = "Internal server error", *, error_type: str | None = None,
              retry_after: str | None = None, delay: float = 0.0) -> None:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        self._push(_error(status, error_type or _ERROR_TYPES.get(status, "api_error"), message, headers, delay))

    def overloaded(self) -> None:
        self.error(529, "Overloaded")

    def context_too_long(self, tokens: int = 210_000, limit: int = 200_000) -> None:
        """Anthropic's answer to a prompt longer than the model's context window."""
        self.error(400, f"prompt is too long: {tokens} tokens > {limit} maximum")
