"""The console as a client of the gateway's own HTTP API, called in-process through ASGI.

The playground's messages take the path a real WhatsApp message takes: a form signed exactly as
Twilio signs it, posted to ``/webhooks/twilio`` of this very application (signature check, dedupe,
rate limit, outbox — nothing skipped). Repository indexing is asked of code_search's admin API the
same way, so the console never imports another service.
"""

from __future__ import annotations

import uuid

import httpx
from starlette.types import ASGIApp
from twilio.request_validator import RequestValidator

from libs.common.settings import get_settings
from services.gateway.signature import SIGNATURE_HEADER, public_url
from services.gateway.webhooks import INBOUND_PATH

# The Host the in-process requests carry; only ever seen by this application.
LOOPBACK_HOST = "console.loopback"
LOOPBACK_BASE = f"http://{LOOPBACK_HOST}"
PROFILE_NAME = "repotalk console"


def new_message_sid() -> str:
    return "SM" + uuid.uuid4().hex


def webhook_params(body: str, address: str, message_sid: str) -> dict[str, str]:
    """The fields Twilio posts for an inbound WhatsApp text message."""
    settings = get_settings().twilio
    account = settings.account_sid or "AC" + "0" * 32
    return {
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "AccountSid": account,
        "From": address,
        "To": settings.whatsapp_from,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": PROFILE_NAME,
        "WaId": "".join(ch for ch in address if ch.isdigit()),
        "ApiVersion": "2010-04-01",
    }


def signed_url(path: str) -> str:
    """The URL the gateway will rebuild for ``path`` on a loopback request (PUBLIC_BASE_URL wins)."""
    return public_url(
        scheme="http", host_header=LOOPBACK_HOST, path=path, query="", headers={}, app_settings=get_settings().app
    )


def signature_for(path: str, params: dict[str, str]) -> str:
    return RequestValidator(get_settings().twilio.auth_token).compute_signature(signed_url(path), params)


def client(app: ASGIApp, timeout: float | None = 30.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOOPBACK_BASE, timeout=timeout)


async def post_inbound(app: ASGIApp, address: str, body: str, message_sid: str) -> httpx.Response:
    """Submit one signed inbound webhook to ``app``; the gateway's answer is returned as it is."""
    params = webhook_params(body, address, message_sid)
    headers = {SIGNATURE_HEADER: signature_for(INBOUND_PATH, params)}
    async with client(app) as http:
        return await http.post(INBOUND_PATH, data=params, headers=headers)


async def post_status(app: ASGIApp, provider_sid: str, status: str) -> httpx.Response:
    """A signed delivery status callback (the playground reports what it has shown as read)."""
    path = "/webhooks/twilio/status"
    settings = get_settings().twilio
    params = {
        "MessageSid": provider_sid,
        "SmsSid": provider_sid,
        "MessageStatus": status,
        "AccountSid": settings.account_sid or "AC" + "0" * 32,
        "From": settings.whatsapp_from,
        "ApiVersion": "2010-04-01",
    }
    async with client(app) as http:
        return await http.post(path, data=params, headers={SIGNATURE_HEADER: signature_for(path, params)})
