"""Search results as code_search produces them, for the ai_engine tests."""

from __future__ import annotations

from libs.common import bus
from libs.common.events import (
    AIResponse,
    Envelope,
    EventType,
    HistoryItem,
    Hit,
    SearchCompleted,
    SearchMode,
    SearchRequested,
)
from services.ai_engine import worker

SIGNATURE_CODE = "\n".join([
    "    def verify_signature(self, url: str, params: dict[str, str], signature: str) -> bool:",
    '        """Twilio signs the full URL plus the sorted form parameters."""',
    "        payload = url + ''.join(k + v for k, v in sorted(params.items()))",
    "        digest = hmac.new(self.token, payload.encode(), hashlib.sha1).digest()",
    "        expected = base64.b64encode(digest).decode()",
    "        return hmac.compare_digest(expected, signature)",
])


def hits() -> list[Hit]:
    return [
        Hit(repo="repotalk", path="services/gateway/signature.py", line=41, end_line=46, symbol="verify_signature",
            kind="function", language="python", score=9.5, snippet=SIGNATURE_CODE),
        Hit(repo="repotalk", path="services/gateway/webhooks.py", line=88, end_line=120, symbol="twilio_webhook",
            kind="function", language="python", score=7.1,
            snippet="async def twilio_webhook(request: Request) -> Response:\n    form = await request.form()"),
        Hit(repo="repotalk", path="docs/twilio.md", line=12, end_line=20, kind="text", language="markdown",
            score=3.2, snippet="Behind TLS termination, rebuild the public URL before verifying."),
    ]


def request(query: str = "where do we validate the twilio signature?", mode: SearchMode = "question",
            limit: int = 8, history: list[HistoryItem] | None = None, repos: list[str] | None = None
            ) -> SearchRequested:
    return SearchRequested(session_id="sess1", user_id="u_abc", query=query, mode=mode, limit=limit,
                           history=history or [], repos=repos or [])


def completed(hit_list: list[Hit] | None = None, **request_fields: object) -> SearchCompleted:
    return SearchCompleted(
        request=request(**request_fields),  # type: ignore[arg-type]
        hits=hits() if hit_list is None else hit_list,
        took_ms=12.5,
        kinds=["symbol", "keyword"],
    )


def envelope(search: SearchCompleted, correlation_id: str = "SM0001") -> Envelope:
    return Envelope.new(search, correlation_id=correlation_id, source="code_search")


BEST = "repotalk/services/gateway/signature.py:41"
WEBHOOK = "repotalk/services/gateway/webhooks.py:88"


def answer(search_envelope: Envelope) -> tuple[AIResponse, str]:
    """Run the worker's handler on a search.completed; the one ai.response it published and its id."""
    with bus.capture_published() as sent:
        worker.handle_search_completed(search_envelope)
    assert len(sent) == 1
    published = sent[0]
    assert published.type is EventType.AI_RESPONSE
    assert published.correlation_id == search_envelope.correlation_id
    assert published.source == "ai_engine"
    data = published.data()
    assert isinstance(data, AIResponse)
    return data, published.id
