"""From a completed search to the answer of the turn (``AIResponse``).

Searches that need no model (a /search pattern, no hits, a search error) are answered directly; a
question goes through the provider chain, and its answer is converted to WhatsApp formatting and
stripped of citations that point at no retrieved source. Whatever fails, the user gets an answer:
the offline answerer composes one from the hits.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from libs.common.events import AIResponse, SearchCompleted
from libs.common.settings import Settings, get_settings
from services.ai_engine import budget, chain, providers
from services.ai_engine.citations import check_citations, expand_source_numbers, locations
from services.ai_engine.formatting import to_whatsapp, truncate
from services.ai_engine.offline import NOTE_FALLBACK, NOTE_NO_MODEL, offline_answer
from services.ai_engine.prompting import build_prompt
from services.ai_engine.provider import Provider
from services.ai_engine.replies import no_hits_answer, pattern_answer, search_error_answer

log = logging.getLogger(__name__)

# AIResponse.answerer for the answers no provider wrote.
PATTERN = "pattern"
NO_RESULTS = "no_results"
SEARCH_ERROR = "search_error"
OFFLINE = "offline"
BUDGET = "budget"

NO_USABLE_CONTENT = "no usable content"


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


def _offline(
    completed: SearchCompleted, max_chars: int, started: float, note: str, answerer: str = OFFLINE, **fields: object
) -> AIResponse:
    text = offline_answer(completed.hits, max_chars, note=note)
    cited = check_citations(text, completed.hits).kept
    return _response(completed, text, answerer, started, citations=cited, **fields)


def finish(text: str, completed: SearchCompleted, max_chars: int) -> str:
    """A model's answer made ready to send: WhatsApp formatting, citations resolved and checked, within
    ``max_chars``. Raises chain.Unusable when nothing is left."""
    hits = completed.hits
    checked = check_citations(expand_source_numbers(to_whatsapp(text), hits), hits)
    if checked.removed:
        log.info("removed %d citation(s) outside the sources", len(checked.removed))
    final = truncate(checked.text.strip(), max_chars)
    if not final.strip():
        raise chain.Unusable(NO_USABLE_CONTENT)
    return final


def _chain(settings: Settings) -> list[Provider]:
    try:
        return providers.configured(settings.ai)
    except ValueError:
        log.exception("the AI provider chain is misconfigured; answering offline")
        return []


def compose_response(
    completed: SearchCompleted, settings: Settings | None = None, correlation_id: str = ""
) -> AIResponse:
    """The answer for a completed search. Never raises for a provider failure: it falls back."""
    settings = settings or get_settings()
    ai = settings.ai
    max_chars = ai.max_answer_chars
    started = time.perf_counter()
    if completed.error:
        return _response(completed, search_error_answer(completed, max_chars), SEARCH_ERROR, started)
    if not completed.hits:
        return _response(completed, no_hits_answer(completed, max_chars), NO_RESULTS, started)
    if completed.request.mode == "pattern":
        return _response(
            completed, pattern_answer(completed, max_chars), PATTERN, started, citations=locations(completed.hits)
        )
    chain_providers = _chain(settings)
    if not chain_providers:
        return _offline(completed, max_chars, started, NOTE_NO_MODEL)
    user_id = completed.request.user_id
    if budget.is_spent(user_id, correlation_id, ai.user_daily_budget_usd):
        log.info("daily AI budget spent for %s: answering from the search results", user_id)
        return _offline(completed, max_chars, started, budget.NOTE_BUDGET, answerer=BUDGET)
    try:
        result = chain.run(
            chain_providers,
            lambda trimmed: build_prompt(completed, ai, trimmed),
            lambda completion: finish(completion.text, completed, max_chars),
            chain.Policy.from_settings(ai),
        )
    except Exception as exc:
        # A bug in the engine must still leave the user with an answer.
        log.exception("the provider chain failed unexpectedly; answering offline")
        return _offline(completed, max_chars, started, NOTE_FALLBACK, fallback_reason=f"engine: {type(exc).__name__}")
    if ai.user_daily_budget_usd > 0 and result.cost_usd > 0 and correlation_id:
        budget.record(correlation_id, user_id, result.cost_usd, result.input_tokens, result.output_tokens)
    accounting: dict[str, Any] = {
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd,
        "retries": result.retries,
        "fallbacks": result.fallbacks,
        "provider_ms": round(result.provider_ms, 3),
        "attempts": result.attempts,
        "fallback_reason": "; ".join(result.reasons) or None,
    }
    if result.text is None or result.provider is None:
        return _offline(completed, max_chars, started, NOTE_FALLBACK, model=result.paid_model, **accounting)
    citations = check_citations(result.text, completed.hits).kept
    return _response(
        completed, result.text, result.provider, started, model=result.model, citations=citations, **accounting
    )
