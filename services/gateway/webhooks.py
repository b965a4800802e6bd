"""Twilio webhooks: inbound WhatsApp messages and delivery status callbacks.

The inbound path answers in milliseconds: bounded read, strict parse, signature, one database
transaction (the inbound writer's, shared with the messages that arrived meanwhile), empty TwiML.
No broker I/O happens here; the outbox relay is only woken.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from libs.common import metrics, telemetry
from libs.common.settings import get_settings
from services.gateway.access import access_list
from services.gateway.delivery_status import apply_status
from services.gateway.forms import BadRequestBody, WebhookForm, parse_webhook, read_body
from services.gateway.inbound import Disposition, InboundMessageIn, InboundOutcome, record_inbound
from services.gateway.inbound_writer import InboundWriter
from services.gateway.outbox import OutboxRelay
from services.gateway.signature import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    is_valid_signature,
    request_public_url,
    signature_algorithm,
)

log = logging.getLogger(__name__)

INBOUND_PATH = "/webhooks/twilio"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_SID_LENGTH = 64

router = APIRouter(tags=["webhooks"])
status_router = APIRouter(tags=["webhooks"])


def twiml_response(request: Request | None = None) -> Response:
    """Empty TwiML; with ``request``, the outbox relay is woken once the response has been sent
    (waking it earlier makes it compete with this very response for the CPU and the database)."""
    relay = getattr(request.app.state, "relay", None) if request is not None else None
    background = BackgroundTask(_wake, relay) if relay is not None else None
    return Response(content=EMPTY_TWIML, media_type="text/xml", background=background)


async def _wake(relay: OutboxRelay) -> None:
    # A coroutine, so Starlette runs it on the event loop: a plain function would cost a threadpool
    # round trip per webhook just to set an Event.
    relay.wake()


async def verified_form(request: Request) -> WebhookForm:
    """The webhook's fields once the body is within limits, well-formed and signed by Twilio."""
    settings = get_settings()
    try:
        body = await read_body(request, settings.app.max_request_bytes)
        form = parse_webhook(body, request.headers.get("content-type", ""))
    except BadRequestBody as exc:
        raise HTTPException(exc.status, exc.reason) from None
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        raise HTTPException(403, f"missing {SIGNATURE_HEADER} header")
    url = request_public_url(request, settings.app)
    algorithm = signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER))
    if not is_valid_signature(settings.twilio.auth_token, url, form.signed_params, signature, algorithm):
        log.warning("rejected a webhook on %s: signature does not match", request.url.path)
        # The URL is named because a proxy rewriting scheme/host/port is the usual cause.
        raise HTTPException(403, f"invalid {SIGNATURE_HEADER} for {url}")
    return form


def _required(form: WebhookForm, *names: str) -> list[str]:
    missing = [name for name in names if not form.get(name).strip()]
    if missing:
        raise HTTPException(400, "missing required field(s): " + ", ".join(missing))
    too_long = [name for name in names if len(form.get(name)) > MAX_SID_LENGTH]
    if too_long:
        raise HTTPException(400, "field(s) too long: " + ", ".join(too_long))
    return [form.get(name).strip() for name in names]


def _num_media(form: WebhookForm) -> int:
    try:
        return max(0, int(form.get("NumMedia") or 0))
    except ValueError:
        raise HTTPException(400, "NumMedia must be an integer") from None


@router.post(INBOUND_PATH, response_class=Response, summary="Inbound WhatsApp message from Twilio")
async def inbound_message(request: Request) -> Response:
    started = time.perf_counter()
    form = await verified_form(request)
    message_sid, address = _required(form, "MessageSid", "From")
    allow_list = access_list()
    if allow_list.restricted:  # before anything is stored: a refused sender leaves no trace
        answer = await allow_list.screen(address, form.get("Body"))
        if answer is not None:
            return answer
    message = InboundMessageIn(
        message_sid=message_sid,
        address=address,
        body=form.get("Body"),
        num_media=_num_media(form),
        trace=telemetry.traceparent(),
    )
    writer: InboundWriter | None = getattr(request.app.state, "writer", None)
    if writer is not None and writer.running:
        outcome = await writer.record(message)  # the writer wakes the relay after its commit
        wake = None
    else:  # an app run without its lifespan
        outcome = await run_in_threadpool(record_inbound, message)
        wake = request if outcome.events_queued else None
    if outcome.disposition is Disposition.DUPLICATE:
        log.info("duplicate inbound %s ignored", message_sid)
    else:
        log.info("inbound %s from %s %s (%d chars, %d media)", message_sid, outcome.user_id,
                 outcome.disposition.value, len(message.body), message.num_media)
    _observe_inbound(message, outcome, started)
    return twiml_response(wake)


def _observe_inbound(message: InboundMessageIn, outcome: InboundOutcome, started: float) -> None:
    metrics.MESSAGES_RECEIVED.labels(outcome.disposition.value).inc()
    if outcome.disposition is Disposition.RATE_LIMITED:
        metrics.RATE_LIMITED.inc()
    telemetry.annotate(message_sid=message.message_sid, user_id=outcome.user_id,
                       disposition=outcome.disposition.value, body_chars=len(message.body),
                       num_media=message.num_media)
    metrics.observe(metrics.WEBHOOK_ACK, time.perf_counter() - started)


@status_router.post("/webhooks/twilio/status", response_class=Response, summary="Twilio message status callback")
async def status_callback(request: Request) -> Response:
    form = await verified_form(request)
    (message_sid,) = _required(form, "MessageSid")
    status = form.get("MessageStatus").strip().lower()
    if not status:
        raise HTTPException(400, "missing required field(s): MessageStatus")
    error_code = form.get("ErrorCode").strip() or None
    changed = await run_in_threadpool(apply_status, message_sid, status, error_code)
    log.info("status %s for %s (%s)", status, message_sid, "applied" if changed else "ignored")
    return twiml_response(request if changed else None)
