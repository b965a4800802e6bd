"""X-Twilio-Signature verification against the URL Twilio actually signed.

Twilio signs the URL it was configured with (scheme, host, port, path, query) plus the POST
fields. Behind a TLS-terminating proxy the URL this process sees differs (http, an internal host
or port), so the public URL is rebuilt from ``PUBLIC_BASE_URL`` or, when explicitly trusted, from
the proxy's X-Forwarded-* headers. The comparison itself is twilio's own ``RequestValidator``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from twilio.request_validator import RequestValidator

from libs.common.settings import AppSettings

SIGNATURE_HEADER = "X-Twilio-Signature"
# Set by Twilio when a webhook is signed with a SharedKey: "key=...,algorithm=HMAC_SHA256".
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def form_multidict(pairs: Sequence[tuple[str, str]]) -> ImmutableMultiDict[str, str]:
    """The form as a multi-dict: repeated keys keep every value (RequestValidator reads ``getlist``)."""
    return ImmutableMultiDict(list(pairs))


def _first(value: str | None) -> str:
    # Chained proxies append: "client-facing, next-hop"; the first entry is what Twilio used.
    return value.split(",", 1)[0].strip() if value else ""


def public_url(
    *,
    scheme: str,
    host_header: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    app_settings: AppSettings,
) -> str:
    """The URL Twilio requested, as Twilio saw it.

    ``PUBLIC_BASE_URL`` wins (it carries any path prefix a proxy strips); otherwise the request's
    own scheme and Host, overridden by X-Forwarded-Proto/Host/Port only when
    ``TRUST_FORWARDED_HEADERS`` is on (an untrusted client could forge them).
    """
    suffix = path + (f"?{query}" if query else "")
    if app_settings.public_base_url:
        return app_settings.public_base_url.rstrip("/") + suffix
    host = host_header
    if app_settings.trust_forwarded_headers:
        scheme = _first(headers.get("x-forwarded-proto")).lower() or scheme
        host = _first(headers.get("x-forwarded-host")) or host
        port = _first(headers.get("x-forwarded-port"))
        if port:
            name = host.rsplit("]", 1)[-1]  # an IPv6 literal has colons of its own
            if ":" in name:
                host = host[: len(host) - len(name)] + name.split(":", 1)[0]
            if port != _DEFAULT_PORTS.get(scheme):
                host = f"{host}:{port}"
    return f"{scheme}://{host}{suffix}"


def request_public_url(request: Request, app_settings: AppSettings) -> str:
    """``public_url`` for a Starlette request."""
    url = request.url
    host_header = request.headers.get("host") or (url.netloc or "localhost")
    return public_url(
        scheme=url.scheme,
        host_header=host_header,
        path=url.path,
        query=url.query,
        headers=request.headers,
        app_settings=app_settings,
    )


def signature_algorithm(settings_header: str | None) -> str:
    """HMAC_SHA1 (Auth Token signing) unless Twilio announced another algorithm."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip()
    return "HMAC_SHA1"


def is_valid_signature(
    auth_token: str,
    url: str,
    params: ImmutableMultiDict[str, str] | Mapping[str, str] | str,
    signature: str | None,
    algorithm: str | None = None,
) -> bool:
    """True when ``signature`` is Twilio's signature of ``url`` and ``params``.

    ``params`` is the form (a multi-dict, repeated keys included) or, for JSON bodies signed
    through a ``bodySHA256`` query parameter, the raw body text.
    """
    if not signature or not auth_token:
        return False
    if isinstance(params, str) and "bodySHA256" not in parse_qs(urlsplit(url).query):
        return False  # a raw body is only covered by the signature through bodySHA256
    validator = RequestValidator(auth_token)
    try:
        if algorithm and algorithm.upper() != "HMAC_SHA1":
            return bool(validator.validate(url, params, signature, algorithm))
        if not isinstance(params, str) and hmac.compare_digest(
            validator.compute_signature(url, params).encode(), signature.encode()
        ):
            # The URL exactly as rebuilt is the usual match: one HMAC instead of the two (with and
            # without the default port) that validate() computes.
            return True
        return bool(validator.validate(url, params, signature))
    except (ValueError, TypeError):
        return False
