"""Steady webhook traffic through the distributed stack while one fault at a time is injected, and a
count of what came back: sent, accepted, answered, lost, duplicated, and how long recovery took.

Shared by tests/e2e/test_faults.py (which asserts nothing is lost or doubled) and bench/faults.py
(which prints the figures). Everything runs against servers of its own: a private Redis and a private
PostgreSQL (so they can be crashed), a fake Twilio and a fake OpenAI-compatible model server.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import percentile
from libs.common.events import Service
from libs.common.lifecycle import reset_process_state
from repotalk.client import signed_webhook, webhook_params
from repotalk.stack import HTTP, Stack
from tests.e2e.servers import PrivatePostgres, PrivateRedis
from tests.e2e.support import SAMPLE_REPO, free_port
from tests.fakes.openai_server import FakeOpenAI, ScriptedResponse, openai_error
from tests.fakes.twilio_server import FakeTwilio

QUESTION = "where is the webhook signature verified?"
LLM_ANSWER = "Checked in `sample_repo/webhooks/security.py:22` by *verify_twilio_signature*."
_CHUNK = re.compile(r"^\((\d+)/(\d+)\)\n")


class ModalLLM(FakeOpenAI):
    """An OpenAI-compatible server that answers every request by its current mode: ``ok``, ``fail``
    (500s) or ``slow`` (answers after longer than the callers' timeout)."""

    def __init__(self, slow_delay: float = 30.0) -> None:
        super().__init__()
        self.mode = "ok"
        self.slow_delay = slow_delay

    def unscripted(self) -> ScriptedResponse:
        if self.mode == "fail":
            return openai_error(500, "The server had an error while processing your request.", "server_error", None)
        return self.completion(LLM_ANSWER, delay=self.slow_delay if self.mode == "slow" else 0.0)


@dataclass
class Sent:
    sender: str
    message_sid: str
    first_at: float
    accepted_at: float | None = None
    attempts: int = 0
    last_outcome: str = ""


class Traffic:
    """Signed webhooks at a steady rate, one sender per message. One that is refused (connection
    refused, 5xx) is sent again with the same MessageSid every half second for up to ``give_up``
    seconds, as Twilio's retries and fallback URL would."""

    def __init__(self, base_url: str, auth_token: str, rate: float, tag: str, give_up: float = 60.0) -> None:
        self.url = f"{base_url}/webhooks/twilio"
        self.auth_token = auth_token
        self.rate = rate
        self.tag = tag
        self.give_up = give_up
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix=f"traffic-{tag}")
        self._local = threading.local()
        self._thread = threading.Thread(target=self._schedule, name=f"traffic-{tag}", daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop offering new messages; returns once every offered one is accepted or given up."""
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            due = start + n / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            sent = Sent(sender=f"whatsapp:+1557{self.tag}{n:05d}", message_sid=f"SM{self.tag}{n:09d}{'0' * 20}",
                        first_at=time.monotonic())
            self.sent.append(sent)
            self._pool.submit(self._deliver, sent)
            n += 1

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=5.0)
        return client

    def _deliver(self, sent: Sent) -> None:
        params = webhook_params(QUESTION, sent.sender, sent.message_sid)
        headers = signed_webhook(self.url, params, self.auth_token)
        while time.monotonic() - sent.first_at < self.give_up:
            sent.attempts += 1
            try:
                response = self._client().post(self.url, data=params, headers=headers)
                sent.last_outcome = str(response.status_code)
                if response.status_code == 200:
                    sent.accepted_at = time.monotonic()
                    return
            except httpx.HTTPError as exc:
                sent.last_outcome = type(exc).__name__
            time.sleep(0.5)


@dataclass
class FaultResult:
    fault: str
    sent: int
    accepted: int
    retried: int  # webhooks that needed more than one delivery attempt (refused while the fault lasted)
    answered: int
    lost: int
    duplicated: int
    recovery_s: float  # fault start -> the last message sent during the fault is answered
    e2e_p95_ms: float
    outcomes: dict[str, int] = field(default_factory=dict)


def _expected_chunks(bodies: list[str]) -> int:
    match = _CHUNK.match(bodies[0]) if bodies else None
    return int(match.group(2)) if match else 1


class FaultBench:
    """The distributed stack on private servers, ready for ``run(fault)``; a context manager."""

    def __init__(self, rate: float = 5.0, lead: float = 2.0, tail: float = 3.0, drain: float = 120.0,
                 redrive_after: float = 5.0, visibility_timeout: float = 8.0, extra_env: dict[str, str] | None = None,
                 ) -> None:
        self.rate, self.lead, self.tail, self.drain = rate, lead, tail, drain
        self.redrive_after = redrive_after
        self.visibility_timeout = visibility_timeout
        self.extra_env = extra_env or {}
        self._stack_ctx = contextlib.ExitStack()
        self.phases = 0

    def __enter__(self) -> FaultBench:
        ctx = self._stack_ctx
        try:
            self.tmp = Path(ctx.enter_context(tempfile.TemporaryDirectory(prefix="repotalk-faults-")))
            self.redis = PrivateRedis(self.tmp)
            self.redis.start()
            ctx.callback(self.redis.stop)
            self.pg = PrivatePostgres()
            ctx.callback(self.pg.close)
            self.pg.start()
            pg_url = self.pg.create_database("repotalk")
            self.twilio = ctx.enter_context(FakeTwilio())
            self.llm = ctx.enter_context(ModalLLM())
            self.env = {
                "REPOTALK_ENV": "test",
                "REPOTALK_DATA_DIR": str(self.tmp / "data"),
                "INDEX_DIR": str(self.tmp / "index"),
                "DATABASE_URL": pg_url,
                "BROKER_URL": self.redis.url,
                "BROKER_KEY_PREFIX": "",
                "SECRET_KEY": "faults-secret-key-0123456789abcdef0123456789",
                "TWILIO_ACCOUNT_SID": self.twilio.account_sid,
                "TWILIO_AUTH_TOKEN": self.twilio.auth_token,
                "TWILIO_API_BASE_URL": self.twilio.base_url,
                "TWILIO_SEND_BACKOFF_BASE": "0.05",
                "RATE_LIMIT_PER_MINUTE": "0",
                "LOG_LEVEL": "WARNING",
                "BROKER_VISIBILITY_TIMEOUT": str(self.visibility_timeout),
                "BROKER_RESTORE_INTERVAL": "1",
                "BROKER_PUBLISH_TIMEOUT": "0.5",
                "OUTBOX_RELAY_INTERVAL": "0.5",
                "TURN_REDRIVE_AFTER": str(self.redrive_after),
                "OPENAI_API_KEY": "sk-faults",
                "OPENAI_BASE_URL": self.llm.base_url,
                "AI_TIMEOUT": "2",
                "AI_MAX_RETRIES": "1",
                "AI_BACKOFF_BASE": "0.1",
                "AI_COOLDOWN_SECONDS": "5",
                "WORKER_POOL": "threads",
                "WORKER_CONCURRENCY": "4",
                **self.extra_env,
            }
            saved = dict(os.environ)
            ctx.callback(self._restore_environ, saved)
            os.environ.update(self.env)
            reset_process_state()
            from libs.common.schema import migrate
            from services.code_search.engine import index_repository

            migrate()
            index_repository(SAMPLE_REPO, name="sample_repo")
            # Supervised, as compose and Kubernetes run it: a process that exits is started again.
            self.stack = Stack(env=self.env, run_dir=self.tmp / "run", port=free_port(), supervise=True)
            ctx.callback(self.stack.stop)
            self.stack.start()
        except BaseException:
            ctx.close()
            raise
        return self

    @staticmethod
    def _restore_environ(saved: dict[str, str]) -> None:
        os.environ.clear()
        os.environ.update(saved)
        reset_process_state()

    def __exit__(self, *exc: object) -> None:
        self._stack_ctx.close()

    # -- faults -------------------------------------------------------------------------------------

    def faults(self) -> dict[str, Callable[[], None]]:
        """Each fault, as an action that returns once the failed part is back (a killed process is
        started again by the stack's supervisor after a second, as an orchestrator would)."""
        actions: dict[str, Callable[[], None]] = {"none": lambda: None}
        for service in Service:
            actions[f"kill -9 {service.value} worker"] = lambda s=service: self._kill_worker(s)  # type: ignore[misc]
        actions["kill -9 http gateway"] = self._kill_http
        actions["restart redis (queues lost)"] = self._restart_redis
        actions["crash + restart postgres"] = self._restart_postgres
        actions["llm provider failing (500s)"] = lambda: self._llm_mode("fail", 5.0)
        actions["llm provider slow (> timeout)"] = lambda: self._llm_mode("slow", 5.0)
        return actions

    def _await_restart(self, name: str, restarts_before: int) -> None:
        deadline = time.monotonic() + 60
        while self.stack.restarts.get(name, 0) <= restarts_before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not restarted")
            time.sleep(0.05)

    def _kill_worker(self, service: Service) -> None:
        before = self.stack.restarts.get(service.value, 0)
        self.stack.kill(service.value)
        self._await_restart(service.value, before)
        self.stack.wait_ready(60, services=[service])

    def _kill_http(self) -> None:
        before = self.stack.restarts.get(HTTP, 0)
        self.stack.kill(HTTP)
        self._await_restart(HTTP, before)
        self.stack.wait_http(60)

    def _restart_redis(self) -> None:
        self.redis.stop()
        time.sleep(2.0)
        self.redis.start()

    def _restart_postgres(self) -> None:
        self.pg.crash()
        time.sleep(2.0)
        self.pg.start()

    def _llm_mode(self, mode: str, seconds: float) -> None:
        self.llm.mode = mode
        time.sleep(seconds)
        self.llm.mode = "ok"

    # -- one phase ----------------------------------------------------------------------------------

    def run(self, fault: str) -> FaultResult:
        """Traffic before, during and after ``fault``; waits for every accepted message's reply."""
        action = self.faults()[fault]
        self.phases += 1
        traffic = Traffic(self.stack.base_url, self.twilio.auth_token, self.rate, tag=f"{self.phases:03d}").start()
        time.sleep(self.lead)
        t_fault = time.monotonic()
        action()
        t_restored = time.monotonic()
        time.sleep(self.tail)
        traffic.stop()
        accepted = [s for s in traffic.sent if s.accepted_at is not None]
        deadline = time.monotonic() + self.drain
        while time.monotonic() < deadline and not self._all_answered(accepted):
            time.sleep(0.2)
        time.sleep(1.0)  # a late duplicate would arrive now
        return self._count(fault, traffic.sent, accepted, t_fault, t_restored)

    def _replies(self) -> dict[str, list[tuple[float, str]]]:
        replies: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for message in self.twilio.messages:
            replies[message.to].append((message.received_monotonic, message.body or ""))
        return replies

    def _all_answered(self, accepted: list[Sent]) -> bool:
        replies = self._replies()
        return all(s.sender in replies for s in accepted)

    def _count(self, fault: str, sent: list[Sent], accepted: list[Sent], t_fault: float,
               t_restored: float) -> FaultResult:
        replies = self._replies()
        answered = [s for s in accepted if s.sender in replies]
        duplicated = 0
        for s in sent:
            bodies = [body for _, body in replies.get(s.sender, [])]
            duplicated += max(0, len(bodies) - _expected_chunks(bodies))
        e2e = [(replies[s.sender][0][0] - s.first_at) * 1000 for s in answered]
        during = [s for s in answered if t_fault <= s.first_at <= max(t_restored, t_fault + 1.0)]
        recovery = max((replies[s.sender][0][0] - t_fault for s in during), default=math.nan)
        outcomes: dict[str, int] = defaultdict(int)
        for s in sent:
            outcomes[s.last_outcome] += 1
        return FaultResult(
            fault=fault, sent=len(sent), accepted=len(accepted), retried=sum(1 for s in sent if s.attempts > 1),
            answered=len(answered), lost=len(accepted) - len(answered), duplicated=duplicated, recovery_s=recovery,
            e2e_p95_ms=percentile(e2e, 95), outcomes=dict(outcomes),
        )

