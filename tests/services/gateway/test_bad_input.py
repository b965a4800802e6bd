"""Bad input at the webhooks, generated (hypothesis): random and non-UTF-8 bodies, random signed forms
with missing, odd or huge fields, forged signatures, replays. Never a 5xx; every refusal says why; a
refused request stores nothing. Run with ``--hypothesis-show-statistics`` to see how many cases ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import ImmutableMultiDict

from libs.common.models.messaging import InboundMessage, OutboxEvent
from libs.common.schema import create_schema
from services.gateway.app import create_app
from services.gateway.forms import BadRequestBody, parse_webhook
from services.gateway.signature import is_valid_signature
from tests.conftest import apply_env
from tests.services.gateway.conftest import AUTH_TOKEN, count, inbound_params, post_signed, sign

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_BYTES = 4096

# Text a form can carry (lone surrogates cannot be encoded as UTF-8 by any client).
form_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)
field_names = st.one_of(
    st.sampled_from(["MessageSid", "From", "Body", "NumMedia", "To", "AccountSid", "MessageStatus", "ErrorCode",
                     "MediaUrl0", "WaId"]),
    form_text.filter(bool),
)
field_values = st.one_of(
    form_text,
    st.sampled_from(["", " ", "0", "-1", "1e9", "whatsapp:+15550001111", "SM" + "a" * 32, "SM" + "a" * 80]),
    st.text(max_size=1).map(lambda c: c * 3000),  # long values, under the body limit once encoded... or not
)
content_types = st.sampled_from([
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8", "application/json",
    "text/plain", "multipart/form-data; boundary=x", "", "application/xml",
])


@pytest.fixture
def sqlite_client(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """One SQLite database for all of a test's generated cases (they only add rows)."""
    apply_env(monkeypatch, DATABASE_URL=f"sqlite:///{Path(base_env['REPOTALK_DATA_DIR']) / 'fuzz.db'}",
              TWILIO_AUTH_TOKEN=AUTH_TOKEN, MAX_REQUEST_BYTES=str(MAX_BYTES), RATE_LIMIT_PER_MINUTE="0")
    create_schema()
    with TestClient(create_app(start_relay=False), raise_server_exceptions=False) as client:
        yield client


def _explained(response: object) -> str:
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, str) and detail.strip(), detail
    return detail


@given(body=st.binary(max_size=600), content_type=content_types, signature=st.one_of(st.none(), form_text))
@FUZZ
def test_random_bodies_are_refused_with_a_reason_and_store_nothing(
    sqlite_client: TestClient, body: bytes, content_type: str, signature: str | None
) -> None:
    headers: dict[str, str | bytes] = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature.encode("utf-8")  # raw bytes: any header a client can send
    for path in ("/webhooks/twilio", "/webhooks/twilio/status"):
        response = sqlite_client.post(path, content=body, headers=headers)
        assert response.status_code in (400, 403, 413, 415), (response.status_code, response.text)
        _explained(response)
    assert count(InboundMessage) == 0 and count(OutboxEvent) == 0


@given(prefix=st.lists(st.tuples(field_names, field_values), max_size=6), raw=st.binary(min_size=1, max_size=40))
@FUZZ
def test_non_utf8_fields_are_refused_before_anything_else(
    sqlite_client: TestClient, prefix: list[tuple[str, str]], raw: bytes
) -> None:
    try:
        raw.decode("utf-8")
        return  # valid UTF-8: not this test's case
    except UnicodeDecodeError:
        pass
    encoded = "".join(f"%{b:02X}" for b in raw)
    body = (urlencode(prefix) + ("&" if prefix else "") + f"Body={encoded}").encode()
    response = sqlite_client.post("/webhooks/twilio", content=body,
                                  headers={"Content-Type": "application/x-www-form-urlencoded",
                                           "X-Twilio-Signature": "anything"})
    assert response.status_code in (400, 413), response.text
    assert "UTF-8" in _explained(response) or response.status_code == 413


@given(fields=st.lists(st.tuples(field_names, field_values), max_size=12), with_required=st.booleans())
@FUZZ
def test_signed_forms_of_any_shape_are_stored_or_refused_with_a_reason(
    sqlite_client: TestClient, fields: list[tuple[str, str]], with_required: bool
) -> None:
    if with_required:
        fields = [*inbound_params(sid=f"SM{abs(hash(tuple(fields))):032d}"[:34]), *fields]
    stored = count(InboundMessage)
    response = post_signed(sqlite_client, fields)
    assert response.status_code in (200, 400, 413), (response.status_code, response.text)
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/xml")
        form = ImmutableMultiDict(fields)
        assert form.get("MessageSid", "").strip() and form.get("From", "").strip()
    else:
        _explained(response)
        assert count(InboundMessage) == stored  # a refused webhook stores nothing

    status = post_signed(sqlite_client, fields, path="/webhooks/twilio/status")
    assert status.status_code in (200, 400, 413), (status.status_code, status.text)
    if status.status_code != 200:
        _explained(status)


@given(signature=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
@FUZZ
def test_forged_signatures_are_refused_and_nothing_is_stored(sqlite_client: TestClient, signature: str) -> None:
    params = inbound_params(sid="SM" + "f" * 32)
    if signature.strip() == sign("http://testserver/webhooks/twilio", params):
        return
    response = sqlite_client.post(
        "/webhooks/twilio", content=urlencode(params),
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
    )
    assert response.status_code == 403
    assert "X-Twilio-Signature" in _explained(response)
    assert count(InboundMessage) == 0 and count(OutboxEvent) == 0


@given(
    token=st.text(max_size=40), url=st.text(max_size=120), signature=st.one_of(st.none(), st.text(max_size=60)),
    params=st.one_of(st.lists(st.tuples(form_text, form_text), max_size=6), st.text(max_size=200)),
    algorithm=st.one_of(st.none(), st.sampled_from(["HMAC_SHA1", "HMAC_SHA256", "md5", ""]), st.text(max_size=10)),
)
@settings(max_examples=400, deadline=None)
def test_the_signature_check_never_raises_and_only_accepts_the_right_signature(
    token: str, url: str, signature: str | None, params: list[tuple[str, str]] | str, algorithm: str | None
) -> None:
    form: ImmutableMultiDict[str, str] | str = params if isinstance(params, str) else ImmutableMultiDict(params)
    assert is_valid_signature(token, url, form, signature, algorithm) in (True, False)
    if token and not isinstance(form, str):
        good = sign(url, list(form.multi_items()), token)
        assert is_valid_signature(token, url, form, good, None)
        assert not is_valid_signature(token, url, form, good[:-2] + ("AA" if not good.endswith("AA") else "BB"), None)


@given(body=st.binary(max_size=400), content_type=content_types)
@settings(max_examples=400, deadline=None)
def test_the_parser_either_parses_or_explains(body: bytes, content_type: str) -> None:
    try:
        form = parse_webhook(body, content_type)
    except BadRequestBody as exc:
        assert exc.status in (400, 415) and exc.reason
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in form.fields.multi_items())


def test_oversized_bodies_without_a_length_are_refused(sqlite_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BYTES // 512 + 2):
            yield b"Body=" + b"x" * 507 + b"&"

    response = sqlite_client.post("/webhooks/twilio", content=chunks(),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and "exceeds the limit" in _explained(response)
    declared = sqlite_client.post("/webhooks/twilio", content=b"x" * (MAX_BYTES + 1),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert declared.status_code == 413 and str(MAX_BYTES) in _explained(declared)
    assert count(InboundMessage) == 0


def test_a_replayed_webhook_is_stored_and_announced_once(sqlite_client: TestClient) -> None:
    """Twilio retries with the same MessageSid and the same I-Twilio-Idempotency-Token: one message, one
    event, hence one reply."""
    params = inbound_params(sid="SM" + "7" * 32)
    retry = {"I-Twilio-Idempotency-Token": "5b6f3c1e-retry"}
    for _ in range(3):
        response = post_signed(sqlite_client, params, headers=retry)
        assert response.status_code == 200
    assert count(InboundMessage) == 1 and count(OutboxEvent) == 1
    # A replay of a captured webhook with its signature, as an attacker would send it: still one.
    assert post_signed(sqlite_client, params).status_code == 200
    assert count(InboundMessage) == 1 and count(OutboxEvent) == 1
