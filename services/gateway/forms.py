"""Reading a webhook body within a size limit and parsing it strictly.

Twilio posts ``application/x-www-form-urlencoded`` UTF-8. Anything else that reaches these
endpoints is answered with a 4xx and a reason, never parsed leniently into half a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote_plus

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request


class BadRequestBody(Exception):
    """The body cannot be accepted; ``status`` and ``reason`` go back to the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class WebhookForm:
    """A parsed webhook: the fields as a multi-dict, and what the signature covers."""

    fields: ImmutableMultiDict[str, str]
    # For a form: the multi-dict itself. For a JSON body: the raw text (signed via bodySHA256).
    signed_params: ImmutableMultiDict[str, str] | str

    def get(self, name: str) -> str:
        return self.fields.get(name, "") or ""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) anything over ``max_bytes`` without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequestBody(400, "invalid Content-Length header") from None
        if length > max_bytes:
            raise BadRequestBody(413, f"request body of {length} bytes exceeds the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequestBody(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    """Strict ``application/x-www-form-urlencoded`` parsing: UTF-8 only, every field ``name=value``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestBody(400, "form body is not valid UTF-8") from None
    pairs: list[tuple[str, str]] = []
    for position, field in enumerate(text.split("&"), start=1):
        if not field:
            continue  # "a=1&&b=2" and a trailing "&" are harmless
        name, sep, value = field.partition("=")
        if not sep or not name:
            raise BadRequestBody(400, f"malformed form field #{position}: expected name=value")
        try:
            pairs.append(
                (unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict"))
            )
        except UnicodeDecodeError:
            raise BadRequestBody(400, f"form field #{position} is not valid UTF-8 once percent-decoded") from None
    return pairs


def parse_json_object(body: bytes) -> tuple[list[tuple[str, str]], str]:
    """A JSON webhook body: top-level scalar fields as strings, and the raw text the signature covers."""
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise BadRequestBody(400, "JSON body is not valid UTF-8") from None
    except ValueError:
        raise BadRequestBody(400, "malformed JSON body") from None
    if not isinstance(data, dict):
        raise BadRequestBody(400, "JSON body must be an object")
    pairs = [
        (str(key), value if isinstance(value, str) else json.dumps(value))
        for key, value in data.items()
        if value is None or isinstance(value, str | int | float | bool)
    ]
    return pairs, text


def parse_webhook(body: bytes, content_type: str) -> WebhookForm:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        pairs, raw = parse_json_object(body)
        fields = ImmutableMultiDict(pairs)
        return WebhookForm(fields=fields, signed_params=raw)
    if media_type not in ("", "application/x-www-form-urlencoded"):
        raise BadRequestBody(
            415, f"unsupported content type {media_type!r}: expected application/x-www-form-urlencoded"
        )
    multi = ImmutableMultiDict(parse_urlencoded(body))
    return WebhookForm(fields=multi, signed_params=multi)
