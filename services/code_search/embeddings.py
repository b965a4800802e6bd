"""Embeddings from an OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, llama.cpp, a proxy), through the
official openai SDK. Vectors come back unit-length, as float32 rows: a dot product is their cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind

from libs.common import telemetry
from libs.common.settings import SearchSettings

if TYPE_CHECKING:
    import numpy as np
    import openai

# ``openai`` and ``numpy`` are imported on first use: they weigh about 45 and 20 MB of RSS, which a
# code_search worker without an embeddings endpoint (the default) should not carry.

# The SDK insists on a key; local servers mostly ignore it.
LOCAL_PLACEHOLDER_KEY = "local"
# text-embedding-3 takes 8,191 tokens; code runs about three characters a token.
MAX_INPUT_CHARS = 12_000


class EmbeddingError(RuntimeError):
    """The endpoint failed or answered something unusable; the message says which, without secrets."""


@dataclass(frozen=True, slots=True)
class EmbeddingConfig:
    base_url: str
    api_key: str
    model: str
    dimensions: int

    @classmethod
    def from_settings(cls, search: SearchSettings) -> EmbeddingConfig | None:
        if not search.embeddings_enabled:
            return None
        return cls(
            base_url=search.embeddings_url.strip(),
            api_key=search.embeddings_api_key.strip() or LOCAL_PLACEHOLDER_KEY,
            model=search.embeddings_model.strip(),
            dimensions=search.embeddings_dimensions,
        )

    @property
    def label(self) -> str:
        """What a stored vector was made by: vectors of another model or size are never compared."""
        return f"{self.model}/{self.dimensions or 'native'}"


@lru_cache(maxsize=8)
def _client(base_url: str, api_key: str) -> openai.OpenAI:
    import openai

    # One client per endpoint keeps its connection pool; retries are ours (the next index run).
    return openai.OpenAI(api_key=api_key, base_url=base_url or None, max_retries=0)


def _describe(exc: Exception) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "the embeddings endpoint timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "the embeddings endpoint is unreachable"
    if isinstance(exc, openai.APIStatusError):
        message = exc.message if isinstance(exc.message, str) else ""
        return f"the embeddings endpoint answered {exc.status_code}: {message[:200]}"
    return f"the embeddings endpoint answered something unusable ({type(exc).__name__})"


def embed(config: EmbeddingConfig, texts: Sequence[str], timeout: float) -> np.ndarray:
    """One request: a (len(texts), dims) float32 array of unit vectors, in the order of ``texts``."""
    import numpy as np

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    # The openai SDK speaks through httpx2, which no OpenTelemetry instrumentation covers: a client span of ours.
    attributes = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": config.model,
                  "repotalk.embeddings.inputs": len(texts)}
    with telemetry.span("embeddings.create", SpanKind.CLIENT, attributes) as current:
        try:
            return _embed(config, texts, timeout)
        except EmbeddingError as exc:
            telemetry.mark_error(current, str(exc)[:120])
            raise


def _embed(config: EmbeddingConfig, texts: Sequence[str], timeout: float) -> np.ndarray:
    import numpy as np
    import openai

    # An empty input is refused by the API; a single space embeds as "nothing in particular".
    inputs = [text[:MAX_INPUT_CHARS] if text.strip() else " " for text in texts]
    try:
        response = _client(config.base_url, config.api_key).embeddings.create(
            model=config.model,
            input=inputs,
            # Floats: every compatible server speaks them (not all speak base64).
            encoding_format="float",
            dimensions=config.dimensions if config.dimensions else openai.omit,
            timeout=timeout,
        )
        rows = sorted(response.data, key=lambda item: item.index)
        if len(rows) != len(inputs):
            raise EmbeddingError(f"the embeddings endpoint returned {len(rows)} vectors for {len(inputs)} inputs")
        matrix = np.asarray([row.embedding for row in rows], dtype=np.float32)
    except EmbeddingError:
        raise
    except Exception as exc:  # the SDK's errors, malformed JSON, ragged rows: all one failure to us
        raise EmbeddingError(_describe(exc)) from exc
    if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise EmbeddingError("the embeddings endpoint returned malformed vectors")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return matrix / norms
