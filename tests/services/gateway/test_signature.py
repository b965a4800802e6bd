"""Signature verification: twilio-python's own vectors, and the public URL behind proxies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import ImmutableMultiDict

from libs.common.settings import AppSettings
from services.gateway.signature import form_multidict, is_valid_signature, public_url, signature_algorithm
from tests.conftest import apply_env
from tests.services.gateway.conftest import gateway_row_counts, inbound_params, post_signed

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = ImmutableMultiDict(
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
        ("Caller", "+14158675309"),
    ]
)
REPEATED = form_multidict(
    [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
)
JSON_BODY = '{"property": "value", "boolean": true}'
JSON_URL = URL + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        # Twilio signed with the default port spelled out: accepted with or without it.
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "kvajT1Ptam85bY51eRf/AJRuM3w="),
        (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("http://mycompany.com:80/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
    ],
)
def test_twilio_vectors_validate(url: str, signature: str) -> None:
    assert is_valid_signature(TOKEN, url, PARAMS, signature)


def test_repeated_keys_vector_needs_every_value() -> None:
    assert is_valid_signature(TOKEN, URL, REPEATED, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
    # A plain dict keeps one Digits value: the same signature no longer matches.
    assert not is_valid_signature(TOKEN, URL, dict(REPEATED), "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def test_json_body_vector_checks_body_hash() -> None:
    assert is_valid_signature(TOKEN, JSON_URL, JSON_BODY, "a9nBmqA0ju/hNViExpshrM61xv4=")
    assert not is_valid_signature(TOKEN, JSON_URL, JSON_BODY.replace("value", "other"), "a9nBmqA0ju/hNViExpshrM61xv4=")
    # A raw body without bodySHA256 in the URL is not covered by the signature at all.
    assert not is_valid_signature(TOKEN, URL, JSON_BODY, "a9nBmqA0ju/hNViExpshrM61xv4=")


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("wrong", URL, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (TOKEN, URL, ImmutableMultiDict([*PARAMS.multi_items(), ("Body", "x")]), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (TOKEN, "http://mycompany.com:1234/myapp.php?foo=1&bar=2", PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        (TOKEN, URL, PARAMS, ""),
        (TOKEN, URL, PARAMS, None),
    ],
)
def test_mismatches_are_rejected(
    token: str, url: str, params: ImmutableMultiDict[str, str], signature: str | None
) -> None:
    assert not is_valid_signature(token, url, params, signature)


def test_signature_algorithm_header() -> None:
    assert signature_algorithm(None) == "HMAC_SHA1"
    assert signature_algorithm("key=webhooks_sharedkey_1,algorithm=HMAC_SHA256") == "HMAC_SHA256"


def _settings(**env: str) -> AppSettings:
    return AppSettings.model_validate(env)


def test_public_base_url_wins_over_request_and_headers() -> None:
    settings = _settings(PUBLIC_BASE_URL="https://bot.example.com/repotalk/", TRUST_FORWARDED_HEADERS="true")
    url = public_url(
        scheme="http", host_header="10.0.0.7:8000", path="/webhooks/twilio", query="a=1",
        headers={"x-forwarded-host": "evil.example"}, app_settings=settings,
    )
    assert url == "https://bot.example.com/repotalk/webhooks/twilio?a=1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-forwarded-proto": "https", "x-forwarded-host": "bot.example.com"}, "https://bot.example.com/hook"),
        ({"x-forwarded-proto": "https, http", "x-forwarded-host": "bot.example.com, lb.internal"},
         "https://bot.example.com/hook"),
        ({"x-forwarded-proto": "https", "x-forwarded-host": "bot.example.com", "x-forwarded-port": "443"},
         "https://bot.example.com/hook"),
        ({"x-forwarded-proto": "https", "x-forwarded-host": "bot.example.com:8443", "x-forwarded-port": "8443"},
         "https://bot.example.com:8443/hook"),
        ({"x-forwarded-proto": "http", "x-forwarded-host": "bot.example.com", "x-forwarded-port": "1234"},
         "http://bot.example.com:1234/hook"),
        ({"x-forwarded-proto": "https", "x-forwarded-host": "[2001:db8::1]:9000", "x-forwarded-port": "443"},
         "https://[2001:db8::1]/hook"),
        ({"x-forwarded-proto": "https"}, "https://internal:8000/hook"),
        ({}, "http://internal:8000/hook"),
    ],
)
def test_trusted_forwarded_headers_rebuild_the_public_url(headers: dict[str, str], expected: str) -> None:
    url = public_url(scheme="http", host_header="internal:8000", path="/hook", query="", headers=headers,
                     app_settings=_settings(TRUST_FORWARDED_HEADERS="true"))
    assert url == expected


def test_forwarded_headers_are_ignored_unless_trusted() -> None:
    url = public_url(
        scheme="http", host_header="internal:8000", path="/hook", query="",
        headers={"x-forwarded-proto": "https", "x-forwarded-host": "bot.example.com"}, app_settings=_settings(),
    )
    assert url == "http://internal:8000/hook"


def test_webhook_behind_proxy_with_public_base_url(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, PUBLIC_BASE_URL="https://bot.example.com")
    params = inbound_params("SM" + "a" * 32)
    assert post_signed(client, params, url="http://testserver/webhooks/twilio").status_code == 403
    response = post_signed(client, params, url="https://bot.example.com/webhooks/twilio")
    assert response.status_code == 200, response.text


def test_webhook_behind_proxy_with_trusted_headers(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com", "X-Forwarded-Port": "443"}
    params = inbound_params("SM" + "b" * 32)
    public = "https://bot.example.com/webhooks/twilio"
    # Not trusted: the headers could be forged, so the request URL is what must have been signed.
    assert post_signed(client, params, url=public, headers=forwarded).status_code == 403
    assert gateway_row_counts()["inbound_messages"] == 0
    apply_env(monkeypatch, TRUST_FORWARDED_HEADERS="true")
    response = post_signed(client, params, url=public, headers=forwarded)
    assert response.status_code == 200, response.text
    assert gateway_row_counts()["inbound_messages"] == 1


def test_webhook_with_repeated_keys_is_verified_over_every_value(client: TestClient) -> None:
    params = [*inbound_params("SM" + "c" * 32), ("Tag", "first"), ("Tag", "second")]
    response = post_signed(client, params)
    assert response.status_code == 200, response.text


def test_webhook_with_a_json_body_is_verified_through_body_sha256(client: TestClient) -> None:
    import hashlib
    import json

    from twilio.request_validator import RequestValidator

    from tests.services.gateway.conftest import AUTH_TOKEN

    body = json.dumps({"MessageSid": "SM" + "d" * 32, "From": "whatsapp:+15550001111", "Body": "json hello"})
    path = "/webhooks/twilio?bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    signature = RequestValidator(AUTH_TOKEN).compute_signature("http://testserver" + path, {})
    headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    assert client.post(path, content=body.replace("hello", "tampered"), headers=headers).status_code == 403
    assert gateway_row_counts()["inbound_messages"] == 0
    assert client.post(path, content=body, headers=headers).status_code == 200
    assert gateway_row_counts()["inbound_messages"] == 1
