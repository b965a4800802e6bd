"""From a completed search to the answer of the turn (``AIResponse``)."""

from __future__ import annotations

import logging
import time

from libs.common.events import AIResponse, SearchCompleted
from libs.common.settings import Settings, get_settings
from services.ai_engine import openai_provider
from services.ai_engine.citations import check_citations, locations
from services.ai_engine.formatting import to_whatsapp, truncate
from services.ai_engine.offline import NOTE_FALLBACK, NOTE_NO_MODEL, offline_answer
from services.ai_engine.replies import no_hits_answer, pattern_answer, search_error_answer

log = logging.getLogger(__name__)

# AIResponse.answerer for the answers that need no model.
PATTERN = "pattern"
NO_RESULTS = "no_results"
SEARCH_ERROR = "search_error"
OFFLINE = "offline"


def _response(completed: SearchCompleted, answer: str, answerer: str, started: float, **fields: object) -> AIResponse:
    request = completed.request
    return AIResponse(
        session_id=request.session_id,
        user_id=request.user_id,
        question=request.query,
        answer=answer,
        answerer=answerer,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        **fields,
    )


def compose_response(completed: SearchCompleted, settings: Settings | None = None) -> AIResponse:
    """The answer for a completed search. Never raises for a provider failure: it falls back."""
    settings = settings or get_settings()
    max_chars = settings.ai.max_answer_chars
    started = time.perf_counter()
    if completed.error:
        return _response(completed, search_error_answer(completed, max_chars), SEARCH_ERROR, started)
    if not completed.hits:
        return _response(completed, no_hits_answer(completed, max_chars), NO_RESULTS, started)
    if completed.request.mode == "pattern":
        return _response(
            completed, pattern_answer(completed, max_chars), PATTERN, started, citations=locations(completed.hits)
        )
    if settings.ai.openai_api_key:
        try:
            return _from_provider(completed, settings, started)
        except openai_provider.ProviderError as exc:
            reason = f"{openai_provider.NAME}: {exc.reason}"
            log.warning("provider failed, answering offline: %s", reason)
            return _offline(completed, max_chars, started, NOTE_FALLBACK, fallback_reason=reason)
        except Exception as exc:
            # A bug in handling the provider's answer must still leave the user with an answer.
            reason = f"{openai_provider.NAME}: {type(exc).__name__}"
            log.exception("unexpected failure with the provider's answer, answering offline")
            return _offline(completed, max_chars, started, NOTE_FALLBACK, fallback_reason=reason)
    return _offline(completed, max_chars, started, NOTE_NO_MODEL)


def _offline(
    completed: SearchCompleted, max_chars: int, started: float, note: str, fallback_reason: str | None = None
) -> AIResponse:
    text = offline_answer(completed.hits, max_chars, note=note)
    cited = check_citations(text, completed.hits).kept
    return _response(completed, text, OFFLINE, started, citations=cited, fallback_reason=fallback_reason)


def _from_provider(completed: SearchCompleted, settings: Settings, started: float) -> AIResponse:
    answer = openai_provider.ask(completed, settings.ai)
    checked = check_citations(to_whatsapp(answer.text), completed.hits)
    if checked.removed:
        log.info("removed %d citation(s) outside the sources", len(checked.removed))
    text = truncate(checked.text.strip(), settings.ai.max_answer_chars)
    usage = {
        "model": answer.model,
        "input_tokens": answer.input_tokens,
        "output_tokens": answer.output_tokens,
        "cost_usd": answer.cost_usd,
    }
    if not text.strip():
        # Nothing left once the invented citations are gone; the tokens were still paid for.
        reason = f"{openai_provider.NAME}: no usable content"
        offline = offline_answer(completed.hits, settings.ai.max_answer_chars, note=NOTE_FALLBACK)
        cited = check_citations(offline, completed.hits).kept
        return _response(completed, offline, OFFLINE, started, citations=cited, fallback_reason=reason, **usage)
    return _response(
        completed, text, openai_provider.NAME, started, citations=[c for c in checked.kept if c in text], **usage
    )
