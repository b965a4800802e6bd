"""Realistic event sequences for a few conversation turns, with the times each hop took.

Offsets are milliseconds after the turn's webhook time; the expected numbers in the tests are
worked out by hand from them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from libs.common.events import (
    AIResponse,
    Envelope,
    EventType,
    Hit,
    MessageFailed,
    MessageReceived,
    MessageSent,
    MessageStatus,
    Payload,
    ReplyKind,
    ReplyReady,
    SearchCompleted,
    SearchMode,
    SearchRequested,
    derived_id,
)


def at(start: datetime, ms: float) -> datetime:
    return start + timedelta(milliseconds=ms)


def event(payload: Payload, sid: str, when: datetime, source: str, suffix: str = "") -> Envelope:
    envelope = Envelope.new(payload, correlation_id=sid, source=source)
    event_id = derived_id(sid, envelope.type, suffix)
    return envelope.model_copy(update={"occurred_at": when, "id": event_id})


def _hits(count: int) -> list[Hit]:
    return [Hit(repo="repotalk", path=f"src/m{i}.py", line=i + 1, end_line=i + 5) for i in range(count)]


class Turn:
    """Builds the events of one turn in the order the services would publish them."""

    def __init__(self, sid: str, user: str, start: datetime) -> None:
        self.sid, self.user, self.start = sid, user, start
        self.events: list[Envelope] = []

    def received(self) -> Turn:
        payload = MessageReceived(message_sid=self.sid, user_id=self.user, body="where is x?", received_at=self.start)
        # The gateway publishes from its outbox a little after the webhook time.
        self.events.append(event(payload, self.sid, at(self.start, 5), "gateway"))
        return self

    def _request(self, mode: SearchMode) -> SearchRequested:
        return SearchRequested(session_id="s-" + self.user, user_id=self.user, query="where is x?", mode=mode)

    def requested(self, ms: float, mode: SearchMode = "question") -> Turn:
        self.events.append(event(self._request(mode), self.sid, at(self.start, ms), "processor"))
        return self

    def search(self, requested_ms: float, completed_ms: float, hits: int, took_ms: float,
               mode: SearchMode = "question", error: str | None = None) -> Turn:
        self.requested(requested_ms, mode)
        completed = SearchCompleted(request=self._request(mode), hits=_hits(hits), took_ms=took_ms,
                                    kinds=["regex"] if mode == "pattern" else ["symbol", "keyword"], error=error)
        self.events.append(event(completed, self.sid, at(self.start, completed_ms), "code_search"))
        return self

    def ai(self, ms: float, answerer: str, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0,
           fallback_reason: str | None = None, retries: int = 0, fallbacks: int = 0) -> Turn:
        payload = AIResponse(session_id="s-" + self.user, user_id=self.user, question="where is x?",
                             answer="It is in repotalk/src/m0.py:1", answerer=answerer,
                             model="gpt-4o-mini" if answerer == "openai" else None,
                             input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
                             latency_ms=ms, fallback_reason=fallback_reason, retries=retries, fallbacks=fallbacks)
        self.events.append(event(payload, self.sid, at(self.start, ms), "ai_engine"))
        return self

    def reply(self, ms: float, kind: ReplyKind = "answer", source: str = "processor", suffix: str = "") -> Turn:
        payload = ReplyReady(user_id=self.user, body="the answer", kind=kind)
        self.events.append(event(payload, self.sid, at(self.start, ms), source, suffix))
        return self

    def sent(self, *ms: float) -> Turn:
        for index, offset in enumerate(ms):
            payload = MessageSent(user_id=self.user, chunk_index=index, chunk_count=len(ms),
                                  provider_sid=f"SM{self.sid}-{index}", channel="twilio")
            self.events.append(event(payload, self.sid, at(self.start, offset), "gateway", suffix=str(index)))
        return self

    def failed(self, ms: float, stage: str, reason: str) -> Turn:
        payload = MessageFailed(user_id=self.user, stage=stage, reason=reason)
        self.events.append(event(payload, self.sid, at(self.start, ms), stage, suffix=stage))
        return self

    def status(self, ms: float, status: str, error_code: str | None = None) -> Turn:
        payload = MessageStatus(provider_sid=f"SM{self.sid}-0", status=status, error_code=error_code)
        self.events.append(event(payload, self.sid, at(self.start, ms), "gateway", suffix=status))
        return self


def scenario(t0: datetime) -> dict[str, Turn]:
    """Nine turns inside the last hour of ``t0`` and one from 30 hours before it."""
    turns = {
        # e2e 3000; hops: queue 100, search 200, ai 2000, persist 100, send 600
        "SM1": Turn("SM1", "u_alice", at(t0, -50 * 60_000)).received().search(100, 300, 3, 150)
        .ai(2300, "openai", 800, 120, 0.000192).reply(2400).sent(2900, 3000)
        .failed(2950, "analytics", "OperationalError"),
        # e2e 1000; queue 200, search 300, ai 100, persist 100, send 300
        "SM2": Turn("SM2", "u_bob", at(t0, -40 * 60_000)).received().search(200, 500, 2, 250)
        .ai(600, "offline", fallback_reason="openai: timeout", retries=2, fallbacks=1).reply(700).sent(1000),
        # pattern search; e2e 2000; queue 50, search 100, ai 10, persist 40, send 1800
        "SM3": Turn("SM3", "u_alice", at(t0, -30 * 60_000)).received().search(50, 150, 5, 80, mode="pattern")
        .ai(160, "pattern").reply(200).sent(2000),
        # /help; e2e 530; send 500
        "SM4": Turn("SM4", "u_carol", at(t0, -25 * 60_000)).received().reply(30, kind="command").sent(530),
        # rate limited: the gateway's notice, no message.received; send 400
        "SM5": Turn("SM5", "u_bob", at(t0, -20 * 60_000)).reply(0, kind="notice", source="gateway", suffix="rate-limit")
        .sent(400),
        # the AI engine failed, the processor apologised; e2e 4000; queue 100, search 300, send 3400
        "SM6": Turn("SM6", "u_dave", at(t0, -15 * 60_000)).received().search(100, 400, 4, 120)
        .failed(500, "ai_engine", "RuntimeError").reply(600, kind="error").sent(4000),
        # answered, then undelivered; e2e 2500; queue 100, search 200, ai 1000, persist 100, send 1100
        "SM7": Turn("SM7", "u_alice", at(t0, -10 * 60_000)).received().search(100, 300, 1, 90)
        .ai(1300, "openai", 500, 80, 0.000123).reply(1400).sent(2500).status(5000, "undelivered", "63016"),
        # invalid regex; e2e 800; queue 100, search 50, ai 10, persist 40, send 600
        "SM10": Turn("SM10", "u_bob", at(t0, -5 * 60_000)).received()
        .search(100, 150, 0, 5, mode="pattern", error="invalid regex: missing )").ai(160, "search_error")
        .reply(200).sent(800),
        # outside a 24-hour window
        "SM9": Turn("SM9", "u_frank", at(t0, -30 * 3_600_000)).received().search(100, 200, 7, 60)
        .ai(900, "openai", 1000, 100, 0.00021).reply(1000).sent(1500),
    }
    # In flight: received, search requested (queue 300), nothing more yet.
    turns["SM8"] = Turn("SM8", "u_erin", at(t0, -2 * 60_000)).received().requested(300)
    return turns


def all_events(turns: dict[str, Turn]) -> list[Envelope]:
    return [envelope for turn in turns.values() for envelope in turn.events]


def of_type(turn: Turn, event_type: EventType) -> list[Envelope]:
    return [e for e in turn.events if e.type is event_type]
