"""A lighter azure-core transport for the status table: one urllib3 pool, no ``requests`` session.

Why: the status table is touched twice per delivered message (the claim insert and the sent mark), and on
these machines about two thirds of that client CPU was ``requests`` building a session request (settings
merged per call, cookies, hooks, a ``PreparedRequest``) around urllib3, which does the wire work anyway
(``python -m benchmarks.bench_pipeline``: docs/benchmarks.md). Table calls are small JSON bodies that
are always read whole, so this transport reads each answer at once and never streams; queue and blob
clients (attachment downloads stream) keep the SDK's own transport.

Errors keep azure-core's split between "not sent" and "maybe sent" (``ServiceRequestError`` vs
``ServiceResponseError`` and their timeout variants), so the SDK's retry policy decides exactly as it
does over ``requests``: a connect failure is retried, a read failure on a non-idempotent insert is
the SDK's call, as before.

Used only when no proxy variable is set (``shared.storage.options``): proxies stay with ``requests``,
which honours them per request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import urllib3
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    HTTPError as Urllib3Error,
)

# azure-core's own defaults (ConnectionConfiguration): 300 s to connect, 300 s per read. outbox always
# passes OUTBOX_STORAGE_TIMEOUT_S; these only apply to a transport built without it.
_DEFAULT_TIMEOUT_S = 300.0
_POOL_SIZE = 32  # one connection per worker thread (min(32, cores + 4)) without blocking on the pool


class _ReadResponse(HttpResponseImpl):
    """An answer already read whole: ``read()`` and ``iter_bytes()`` serve the bytes in memory."""

    def __init__(self, request: HttpRequest, raw: urllib3.BaseHTTPResponse) -> None:
        headers = case_insensitive_dict(raw.headers.items())
        super().__init__(
            request=request,
            internal_response=raw,
            status_code=raw.status,
            reason=raw.reason or "",
            content_type=headers.get("Content-Type"),
            headers=headers,
            stream_download_generator=None,
        )
        self._content = raw.data
        self._is_stream_consumed = True

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.content

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.content

    def close(self) -> None:
        self._is_closed = True


class Urllib3Transport(HttpTransport):
    """``HttpTransport`` over a ``urllib3.PoolManager``; thread-safe (the pool is), reads every answer whole."""

    def __init__(self, *, connection_timeout: float = _DEFAULT_TIMEOUT_S,
                 read_timeout: float = _DEFAULT_TIMEOUT_S) -> None:
        self._timeout = (connection_timeout, read_timeout)
        self._pool: urllib3.PoolManager | None = None

    def open(self) -> None:
        if self._pool is None:
            self._pool = urllib3.PoolManager(maxsize=_POOL_SIZE, retries=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None

    def __enter__(self) -> Urllib3Transport:
        self.open()
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        self.open()
        assert self._pool is not None
        connect = kwargs.pop("connection_timeout", self._timeout[0])
        read = kwargs.pop("read_timeout", self._timeout[1])
        body = request.content
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            raw = self._pool.request(
                request.method, request.url, body=body, headers=dict(request.headers),
                timeout=urllib3.Timeout(connect=connect, read=read),
                retries=False, redirect=False, preload_content=True, enforce_content_length=True,
            )
        except NewConnectionError as err:  # a subclass of ConnectTimeoutError in urllib3 2: first
            raise ServiceRequestError(err, error=err) from err
        except ConnectTimeoutError as err:
            raise ServiceRequestTimeoutError(err, error=err) from err
        except ReadTimeoutError as err:
            raise ServiceResponseTimeoutError(err, error=err) from err
        except ProtocolError as err:
            if "IncompleteRead" in str(err):
                raise IncompleteReadError(err, error=err) from err
            raise ServiceResponseError(err, error=err) from err
        except DecodeError as err:  # the answer arrived but its content encoding is broken
            raise ServiceResponseError(err, error=err) from err
        except Urllib3Error as err:
            # Anything else urllib3 raises happened before a byte of the request went out (bad URL,
            # TLS set-up, a closed pool): safe to retry.
            raise ServiceRequestError(err, error=err) from err
        return _ReadResponse(request, raw)
