"""A local HTTP server that speaks OpenAI's embeddings API (``POST /v1/embeddings``), with a toy model.

The model is deterministic and small, and knows synonyms: every word of a group (``login``,
``credentials``, ``authenticate`` ...) lands on the group's own dimension, and any other word on one of
the rest by its hash. Texts that share no word but a meaning then come out close — what a semantic
search test needs to tell the semantic ranking from the lexical ones. ``down`` fails every request
until cleared; a response scripted with ``raw`` answers the next one.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from typing import Any

from tests.fakes.openai_server import OpenAICompatible, RecordedRequest, ScriptedResponse, openai_error

CONCEPTS = (
    ("authenticate", "authentication", "login", "log", "signin", "sign", "signing", "credential", "credentials",
     "password", "passwords"),
    ("invoice", "invoices", "billing", "bill", "money", "payment", "pay", "charge", "amount", "total", "due"),
    ("retry", "retries", "backoff", "again", "attempt", "attempts", "transient"),
)
DIMENSIONS = 48
_WORD = re.compile(r"[A-Za-z]+")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def toy_vector(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    vector = [0.0] * dimensions
    for raw in _WORD.findall(text):
        for word in _CAMEL.findall(raw):
            word = word.lower()
            for number, group in enumerate(CONCEPTS):
                if word in group:
                    vector[number] += 3.0
                    break
            else:
                vector[len(CONCEPTS) + zlib.crc32(word.encode()) % (dimensions - len(CONCEPTS))] += 1.0
    return vector


class FakeEmbeddings(OpenAICompatible):
    """``with FakeEmbeddings() as fake: monkeypatch EMBEDDINGS_URL=fake.base_url``."""

    path = "/v1/embeddings"
    thread_name = "fake-embeddings"

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    @property
    def inputs(self) -> list[str]:
        """Every text sent for embedding so far, in order."""
        return [text for request in self.requests for text in request.json["input"]]

    def respond(self, request: RecordedRequest) -> ScriptedResponse:
        if self.down:
            return openai_error(503, "The engine is currently overloaded", "server_error", None)
        if self.pending:
            return self._next()
        body: dict[str, Any] = request.json
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if any(not isinstance(text, str) or not text for text in texts):
            return openai_error(400, "input must be non-empty strings", "invalid_request_error", None)
        dimensions = int(body.get("dimensions") or DIMENSIONS)
        data = []
        for index, text in enumerate(texts):
            vector = toy_vector(text, DIMENSIONS)[:dimensions]
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) for text in texts)
        payload = {"object": "list", "data": data, "model": body["model"],
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return ScriptedResponse(200, json.dumps(payload).encode())
