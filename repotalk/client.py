"""A WhatsApp user simulated from the terminal: signed Twilio webhooks out, sandbox replies back."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree

import httpx
from twilio.request_validator import RequestValidator

DEFAULT_FROM = "whatsapp:+15550001111"


class AskError(RuntimeError):
    pass


@dataclass
class Reply:
    message_sid: str
    chunks: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.chunks)


def new_message_sid() -> str:
    return "SM" + uuid.uuid4().hex


def signed_webhook(url: str, params: dict[str, str], auth_token: str) -> dict[str, str]:
    """The X-Twilio-Signature header Twilio would send for this form POST."""
    return {"X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, params)}


def webhook_params(body: str, sender: str, message_sid: str, to: str = "whatsapp:+14155238886") -> dict[str, str]:
    return {
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ProfileName": "repotalk cli",
        "WaId": "".join(ch for ch in sender if ch.isdigit()),
        "ApiVersion": "2010-04-01",
    }


def twiml_messages(twiml: str) -> list[str]:
    """The texts of a TwiML response's <Message> elements (empty for the usual empty TwiML)."""
    if "<Message" not in twiml:
        return []
    try:
        root = ElementTree.fromstring(twiml)
    except ElementTree.ParseError:
        return []
    return [element.text or "" for element in root.iter("Message")]


class Client:
    def __init__(self, server: str, auth_token: str, sender: str = DEFAULT_FROM, timeout: float = 60.0) -> None:
        self.server = server.rstrip("/")
        self.auth_token = auth_token
        self.sender = sender
        self.timeout = timeout
        self.http = httpx.Client(timeout=10.0)
        self._immediate: dict[str, list[str]] = {}

    def close(self) -> None:
        self.http.close()

    def send(self, body: str) -> str:
        message_sid = new_message_sid()
        url = f"{self.server}/webhooks/twilio"
        params = webhook_params(body, self.sender, message_sid)
        response = self.http.post(url, data=params, headers=signed_webhook(url, params, self.auth_token))
        if response.status_code != 200:
            raise AskError(f"the server refused the message ({response.status_code}): {response.text[:300]}")
        immediate = twiml_messages(response.text)
        if immediate:  # answered in the webhook's own response (the allow-list does that)
            self._immediate[message_sid] = immediate
        return message_sid

    def wait_reply(self, message_sid: str) -> Reply:
        if message_sid in self._immediate:
            return Reply(message_sid, self._immediate.pop(message_sid))
        deadline = time.monotonic() + self.timeout
        url = f"{self.server}/api/v1/sandbox/replies/{message_sid}"
        headers = {"Authorization": f"Bearer {self.auth_token}"}
        delay = 0.05
        while time.monotonic() < deadline:
            response = self.http.get(url, headers=headers)
            if response.status_code == 404 and "sandbox" in response.text.lower():
                raise AskError("the server sends replies through Twilio, not the sandbox: check your phone")
            if response.status_code == 200:
                data = response.json()
                if data.get("complete") and data.get("replies"):
                    replies = sorted(data["replies"], key=lambda r: (r.get("created_at", ""), r["chunk_index"]))
                    return Reply(message_sid, [r["body"] for r in replies])
            elif response.status_code != 404:
                raise AskError(f"reading the reply failed ({response.status_code}): {response.text[:300]}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise AskError(f"no reply within {self.timeout:.0f} s (message {message_sid})")

    def ask(self, body: str) -> Reply:
        return self.wait_reply(self.send(body))
