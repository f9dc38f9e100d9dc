"""The one place outbox builds HTTP clients.

Measured on these machines (reference/performance-anchors.md): a new TLS context per client costs
20-27 ms of CPU for loading the CA bundle, and a new connection per request costs a handshake. So the
process builds ONE ``httpx.Client`` over ``settings.ssl_context()`` with keep-alive, and everything
that speaks HTTPS from outbox's own code (Graph, upload sessions, MSAL) goes through it.

Trust is always explicit: the client is given the shared SSLContext, so ``SSL_CERT_FILE`` or
``REQUESTS_CA_BUNDLE`` in the environment never changes what outbox trusts. Proxy variables
(``HTTPS_PROXY``/``NO_PROXY``) are still honoured, as the Azure SDKs honour them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from shared.settings import Settings

USER_AGENT = "outbox/0.1 (+python-httpx)"

# Graph allows 4 requests in flight per mailbox; a process serves a handful of mailboxes, and the
# Functions worker runs up to 32 invocations at once (PYTHON_THREADPOOL_THREAD_COUNT 32, host.json lets in
# 32 + 31); fewer idle connections kept than threads would mean TLS handshakes under load, and the
# headroom serves a thread count raised in the app settings.
MAX_CONNECTIONS = 96
MAX_KEEPALIVE = 64
KEEPALIVE_EXPIRY_S = 60.0


def timeouts(settings: Settings) -> httpx.Timeout:
    """Connect fails fast (nothing was sent); read/write/pool get the configured HTTP timeout."""
    total = settings.http_timeout_s
    return httpx.Timeout(total, connect=min(10.0, total))


def build_client(settings: Settings, **overrides: Any) -> httpx.Client:
    """A keep-alive client over the process's shared SSLContext (HTTP/1.1: what Graph clients use)."""
    options: dict[str, Any] = {
        "verify": settings.ssl_context(),
        "timeout": timeouts(settings),
        "limits": httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        ),
        "headers": {"User-Agent": USER_AGENT},
        "follow_redirects": False,
    }
    options.update(overrides)
    return httpx.Client(**options)


class HttpStatusError(Exception):
    """MSAL asked for ``raise_for_status()`` on an error answer; carries what the classifier needs."""

    def __init__(self, status: int, body: str, headers: Mapping[str, str], url: str) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers)
        self.url = url
        super().__init__(f"HTTP {status} from {url}")

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


class _MsalResponse:
    """What MSAL reads from a response: status_code, text, headers, raise_for_status()."""

    __slots__ = ("headers", "status_code", "text", "url")

    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.text = response.text
        self.headers = response.headers
        self.url = str(response.request.url)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpStatusError(self.status_code, self.text, self.headers, self.url)


class MsalHttpClient:
    """MSAL's ``http_client`` over the shared httpx client.

    Not a drop-in: MSAL passes form values (the client assertion) as ``bytes``, which httpx would
    encode as ``b'...'``, so bytes are decoded first. MSAL's own ``timeout`` keyword is ignored: the
    httpx client's timeouts apply.
    """

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        # MSAL turns a failed OIDC discovery into a ValueError without the body; the body (with the
        # AADSTS code, e.g. 90002 tenant not found) is kept here, per thread, for the classifier.
        self._last_error = threading.local()

    def last_error(self) -> HttpStatusError | None:
        """The last 4xx/5xx answer this thread received (None after a success)."""
        return getattr(self._last_error, "value", None)

    def _remember(self, response: httpx.Response) -> _MsalResponse:
        wrapped = _MsalResponse(response)
        self._last_error.value = (
            HttpStatusError(wrapped.status_code, wrapped.text, wrapped.headers, wrapped.url)
            if wrapped.status_code >= 400
            else None
        )
        return wrapped

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> _MsalResponse:
        request: dict[str, Any] = {"params": params, "headers": headers}
        if isinstance(data, Mapping):
            request["data"] = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        elif data is not None:
            request["content"] = data
        return self._remember(self._client.post(url, **request))

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> _MsalResponse:
        return self._remember(self._client.get(url, params=params, headers=headers))

    def close(self) -> None:
        """The shared client belongs to the process bundle (``Senders``), which closes it."""
