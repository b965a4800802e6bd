"""The HTTP client the twilio SDK sends through: urllib3 with kept-alive connections.

twilio-python's default client goes through requests, whose per-call machinery (sessions, prepared
requests, hooks, cookie jars, two scans of the environment for proxies) costs about twice the CPU
of the HTTP exchange itself, for one POST per message. The SDK takes any ``twilio.http.HttpClient``
(``Client(http_client=...)``); this one sends the same request through a urllib3 pool and reads the
environment's proxy and CA settings once, as requests would on each call.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode

import certifi
import requests
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

log = logging.getLogger("twilio.http_client")

_JSON_TYPES = ("application/json", "application/scim+json")
_MAX_REDIRECTS = 10


def _pool_for(base_url: str, maxsize: int) -> urllib3.PoolManager:
    """A pool for ``base_url`` honouring HTTP(S)_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE like requests."""
    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    options: dict[str, Any] = {"maxsize": maxsize, "block": False, "retries": False, "ca_certs": ca_certs}
    proxies = requests.utils.get_environ_proxies(base_url)
    scheme = urllib3.util.parse_url(base_url).scheme or "https"
    proxy = proxies.get(scheme) or proxies.get("all")
    if proxy:
        auth = urllib3.util.parse_url(proxy).auth
        headers = urllib3.make_headers(proxy_basic_auth=unquote(auth)) if auth else None
        return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)
    return urllib3.PoolManager(**options)


def _charset(headers: Mapping[str, str]) -> str:
    for part in headers.get("Content-Type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"  # JSON's encoding, which is what Twilio answers


class KeepAliveHttpClient(HttpClient):
    """``twilio.http.HttpClient`` over urllib3; raises ``urllib3.exceptions.HTTPError`` when the
    server cannot be reached or does not answer in time (as requests raises ConnectionError)."""

    def __init__(self, base_url: str, timeout: float, maxsize: int = 32) -> None:
        super().__init__(logger=log, is_async=False, timeout=timeout)
        self.pool = _pool_for(base_url, maxsize)

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        method = method.upper()
        headers = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if params:
            uri += ("&" if "?" in uri else "?") + urlencode(params, doseq=True)
        body: bytes | None = None
        if data:
            if headers.get("Content-Type") in _JSON_TYPES:
                body = json.dumps(data).encode("utf-8")
            else:
                body = urlencode(data, doseq=True).encode("utf-8")
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method, "url": uri, "params": None, "headers": headers})
        answer = self.pool.request(
            method,
            uri,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(total=_MAX_REDIRECTS, connect=0, read=0, status=0, other=0,
                                  redirect=_MAX_REDIRECTS) if allow_redirects else False,
            redirect=allow_redirects,
        )
        response = Response(answer.status, answer.data.decode(_charset(answer.headers), errors="replace"),
                            answer.headers)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, response)
        self._test_only_last_response = response
        return response
