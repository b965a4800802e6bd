"""A local HTTP server that speaks the part of Twilio's REST API repotalk uses.

The official twilio SDK talks to it unchanged once ``client.api.base_url`` points here
(``TWILIO_API_BASE_URL``)::

    with FakeTwilio() as fake:
        env TWILIO_ACCOUNT_SID=fake.account_sid TWILIO_AUTH_TOKEN=fake.auth_token TWILIO_API_BASE_URL=fake.base_url
        ... code under test sends ...
        [message] = fake.wait_for(1)
        assert message.to == "whatsapp:+15550001111"

Endpoints:
  POST /2010-04-01/Accounts/{AccountSid}/Messages.json   create (HTTP basic auth; To, From, Body,
                                                         ContentSid, ContentVariables, StatusCallback)
  GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json   fetch one
  POST /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json   update: Body="" redacts (recorded in
                                                         ``redactions``); an inbound message is known to the
                                                         fake once ``add_inbound`` was called for it
  GET  /_fake/messages                                    every recorded message as JSON (for other processes)
  POST /_fake/reset                                       forget messages and scripted failures
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

API_VERSION = "2010-04-01"
_CREATE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_FETCH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages/(?P<sid>[^/]+)\.json$")
BODY_LIMIT = 1600


@dataclass(frozen=True)
class FakeMessage:
    """One message the fake accepted, with the fields as Twilio received them."""

    sid: str
    account_sid: str
    to: str
    from_: str
    body: str | None
    content_sid: str | None
    content_variables: str | None
    status_callback: str | None
    date_created: str
    status: str = "queued"
    direction: str = "outbound-api"
    # When the fake accepted it (time.monotonic() of this process): end-to-end latency in bench/.
    received_monotonic: float = field(default_factory=time.monotonic)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["from"] = data.pop("from_")
        return data

    def resource(self) -> dict[str, Any]:
        """The message resource as Twilio's API returns it."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"
        body = self.body or ""
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": self.date_created,
            "date_sent": None,
            "date_updated": self.date_created,
            "direction": self.direction,
            "error_code": None,
            "error_message": None,
            "from": self.from_,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(body) // 153))) if len(body) > 160 else "1",
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self.to,
            "uri": uri,
        }


@dataclass
class _Failure:
    status: int
    code: int | None
    message: str
    remaining: int


class FakeTwilio:
    """Twilio's Messages API on 127.0.0.1:<free port>, in a background thread (a context manager)."""

    def __init__(
        self,
        account_sid: str = "AC" + "f" * 32,
        auth_token: str = "fake-twilio-auth-token",
        host: str = "127.0.0.1",
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Condition()
        self._messages: list[FakeMessage] = []
        self._failures: deque[_Failure] = deque()
        self.requests = 0  # every create request, refused ones included
        self.redactions: list[str] = []  # sids whose body was blanked, in order (repeats included)
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeTwilio:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="fake-twilio", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inspection and scripting -------------------------------------------------------------

    @property
    def messages(self) -> list[FakeMessage]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[FakeMessage]:
        """The recorded messages once there are at least ``count``; TimeoutError otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"expected {count} message(s), got {len(self._messages)} in {timeout}s")
            return list(self._messages)

    def fail_next(
        self, status: int = 429, code: int | None = 20429, times: int = 1, message: str | None = None
    ) -> None:
        """Refuse the next ``times`` create requests with ``status`` and Twilio error ``code``."""
        text = message or {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(
            status, "Error"
        )
        with self._lock:
            self._failures.append(_Failure(status=status, code=code, message=text, remaining=times))

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._failures.clear()
            self.redactions.clear()
            self.requests = 0

    def add_inbound(self, sid: str, from_: str, to: str, body: str) -> None:
        """Make the fake hold an inbound message, as Twilio does for every message it delivers to us."""
        message = FakeMessage(
            sid=sid, account_sid=self.account_sid, to=to, from_=from_, body=body, content_sid=None,
            content_variables=None, status_callback=None,
            date_created=format_datetime(datetime.now(UTC), usegmt=True), status="received", direction="inbound",
        )
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    def message(self, sid: str) -> FakeMessage | None:
        with self._lock:
            return next((m for m in self._messages if m.sid == sid), None)

    def wait_for_redactions(self, count: int, timeout: float = 10.0) -> list[str]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.redactions) >= count, timeout):
                raise TimeoutError(f"expected {count} redaction(s), got {len(self.redactions)} in {timeout}s")
            return list(self.redactions)

    # -- request handling ------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(password, self.auth_token)

    def _next_failure(self) -> _Failure | None:
        with self._lock:
            self.requests += 1
            if not self._failures:
                return None
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.popleft()
            return failure

    def _create(self, account: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        failure = self._next_failure()
        if failure is not None:
            return failure.status, _error(failure.status, failure.code, failure.message)
        to, from_ = form.get("To", ""), form.get("From", "")
        body, content_sid = form.get("Body"), form.get("ContentSid")
        if not to:
            return 400, _error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not form.get("MessagingServiceSid"):
            return 400, _error(400, 21603, "A 'From' phone number is required.")
        if not body and not content_sid and not form.get("MediaUrl"):
            return 400, _error(400, 21602, "Message body is required.")
        if body is not None and len(body) > BODY_LIMIT:
            return 400, _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        message = FakeMessage(
            sid="SM" + uuid.uuid4().hex,
            account_sid=account,
            to=to,
            from_=from_,
            body=body,
            content_sid=content_sid,
            content_variables=form.get("ContentVariables"),
            status_callback=form.get("StatusCallback"),
            date_created=format_datetime(datetime.now(UTC), usegmt=True),
        )
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()
        return 201, message.resource()

    def _update(self, sid: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Twilio's message update: ``Body=""`` redacts the body (the only update repotalk makes)."""
        if "Body" not in form:
            return 400, _error(400, 20001, "Missing required parameter Body or Status in the post body")
        if form["Body"] != "":
            return 400, _error(400, 20001, "Body can only be updated to an empty string (redaction)")
        with self._lock:
            index = next((i for i, m in enumerate(self._messages) if m.sid == sid), None)
            if index is None:
                return 404, _error(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
            self._messages[index] = replace(self._messages[index], body="")
            self.redactions.append(sid)
            self._lock.notify_all()
            return 200, self._messages[index].resource()

    def _fetch(self, sid: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            found = next((m for m in self._messages if m.sid == sid), None)
        if found is None:
            return 404, _error(404, 20404, f"The requested resource /Messages/{sid}.json was not found")
        return 200, found.resource()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive like the real API (the SDK's requests session reuses its connection).
            protocol_version = "HTTP/1.1"
            # Headers and body go out in one write (a buffered wfile, flushed after each request) with
            # Nagle off: two small writes on a kept-alive connection meet the client's delayed ACK and
            # cost ~40 ms per request.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read_form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                return dict(parse_qsl(raw, keep_blank_values=True))

            def _check_account(self, account: str) -> bool:
                if not fake._authorized(self.headers.get("Authorization")):
                    self._reply(401, _error(401, 20003, "Authenticate"))
                    return False
                if account != fake.account_sid:
                    self._reply(404, _error(404, 20404, "The requested resource was not found"))
                    return False
                return True

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/_fake/reset":
                    self._read_form()
                    fake.reset()
                    self._reply(200, {"reset": True})
                    return
                update = _FETCH.match(path)
                if update is not None:
                    form = self._read_form()
                    if self._check_account(update["account"]):
                        self._reply(*fake._update(update["sid"], form))
                    return
                match = _CREATE.match(path)
                if match is None:
                    self._read_form()
                    self._reply(404, _error(404, 20404, "The requested resource was not found"))
                    return
                form = self._read_form()
                if self._check_account(match["account"]):
                    self._reply(*fake._create(match["account"], form))

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/_fake/messages":
                    self._reply(200, [m.to_json() for m in fake.messages])
                    return
                match = _FETCH.match(path)
                if match is None:
                    self._reply(404, _error(404, 20404, "The requested resource was not found"))
                    return
                if self._check_account(match["account"]):
                    self._reply(*fake._fetch(match["sid"]))

        return Handler


def _error(status: int, code: int | None, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
        "status": status,
    }
