"""Where replies go: Twilio's REST API (official SDK), or the built-in sandbox channel.

The sandbox channel is used when no Twilio account is configured (embedded mode, demos): the chunk
is kept in outbound_messages as delivered and read back through the sandbox API.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import requests
import urllib3
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from libs.common import telemetry
from libs.common.logs import redact
from libs.common.settings import Settings, TwilioSettings, get_settings
from services.gateway.twilio_http import KeepAliveHttpClient

log = logging.getLogger(__name__)

# Per HTTP request to Twilio; a send that hangs longer is retried (see SendError.retryable).
TWILIO_HTTP_TIMEOUT = 15.0
MAX_RETRY_DELAY = 30.0


@dataclass(frozen=True)
class OutgoingMessage:
    to: str
    body: str | None = None
    content_sid: str | None = None  # an approved template instead of free text
    content_variables: str | None = None  # JSON object, e.g. '{"1": "..."}'


@dataclass(frozen=True)
class Accepted:
    provider_sid: str
    status: str


class SendError(Exception):
    """A send the provider refused; ``retryable`` for 429, 5xx and network errors."""

    def __init__(self, reason: str, *, error_code: str | None, retryable: bool, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code
        self.retryable = retryable
        self.http_status = http_status


class Channel(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> Accepted: ...


class SandboxChannel:
    """Keeps replies in the database instead of sending them (no Twilio account configured)."""

    name = "sandbox"

    def send(self, message: OutgoingMessage) -> Accepted:
        return Accepted(provider_sid="SB" + uuid.uuid4().hex, status="delivered")


@lru_cache(maxsize=4)
def twilio_client(account_sid: str, auth_token: str, api_base_url: str) -> Client:
    """One SDK client (and HTTP connection pool) per configuration, shared by the worker's threads."""
    api_url = api_base_url.rstrip("/") if api_base_url else "https://api.twilio.com"
    client = Client(account_sid, auth_token, http_client=KeepAliveHttpClient(api_url, timeout=TWILIO_HTTP_TIMEOUT))
    if api_base_url:
        # Tests and staging point the SDK at a server that speaks Twilio's REST API (FACTS).
        client.api.base_url = api_url
    return client


class TwilioChannel:
    name = "twilio"

    def __init__(self, settings: TwilioSettings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client or twilio_client(settings.account_sid, settings.auth_token, settings.api_base_url)

    def send(self, message: OutgoingMessage) -> Accepted:
        kwargs: dict[str, str] = {"to": message.to, "from_": self.settings.whatsapp_from}
        if message.content_sid:
            kwargs["content_sid"] = message.content_sid
            if message.content_variables:
                kwargs["content_variables"] = message.content_variables
        else:
            kwargs["body"] = message.body or ""
        if self.settings.status_callback_url:
            kwargs["status_callback"] = self.settings.status_callback_url
        try:
            created = self.client.messages.create(**kwargs)
        except TwilioException as exc:
            status = getattr(exc, "status", None)
            code = getattr(exc, "code", None)
            reason = str(getattr(exc, "msg", "") or getattr(exc, "title", "") or type(exc).__name__)
            retryable = isinstance(status, int) and (status == 429 or status >= 500)
            raise SendError(
                # Twilio's messages can quote the destination number; events and logs must not.
                redact(f"Twilio answered {status}: {reason}")[:200],
                error_code=str(code) if code is not None else (str(status) if status else None),
                retryable=retryable,
                http_status=status if isinstance(status, int) else None,
            ) from exc
        except (urllib3.exceptions.HTTPError, requests.ConnectionError, requests.Timeout) as exc:
            raise SendError(f"cannot reach Twilio: {type(exc).__name__}", error_code=None, retryable=True) from exc
        return Accepted(provider_sid=str(created.sid), status=str(created.status or "queued"))


def channel_for(settings: Settings | None = None) -> Channel:
    settings = settings or get_settings()
    if settings.twilio.sandbox:
        return SandboxChannel()
    return TwilioChannel(settings.twilio)


def send_with_retries(
    channel: Channel,
    message: OutgoingMessage,
    max_attempts: int,
    backoff_base: float,
    sleep: Callable[[float], None] = time.sleep,
    before_retry: Callable[[], None] | None = None,
) -> Accepted:
    """Send, retrying retryable refusals with exponential backoff and full jitter.

    The SDK itself does not retry 429 (FACTS), so this is the only retry loop. ``before_retry`` runs
    after each backoff, just before the next attempt (the sender renews its claim there; it raises to stop).
    """
    attempt = 1
    while True:
        try:
            return channel.send(message)
        except SendError as exc:
            if not exc.retryable or attempt >= max(1, max_attempts):
                raise
            delay = min(MAX_RETRY_DELAY, backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            log.warning("send refused (%s, code %s), attempt %d of %d; retrying in %.2fs",
                        exc.http_status, exc.error_code, attempt, max_attempts, delay)
            telemetry.event("send.retry", **{"repotalk.attempt": attempt, "http.response.status_code": exc.http_status,
                                             "repotalk.error_code": exc.error_code, "repotalk.retry_in_s": delay})
            sleep(delay)
            if before_retry is not None:
                before_retry()
            attempt += 1


def attempt_seconds() -> float:
    """How long one send attempt can take at most: the connect and read timeouts."""
    return TWILIO_HTTP_TIMEOUT * 2
