"""The exact replies the fake servers send for a catalog row: SMTP reply lines, Graph, Entra ID and
Key Vault error responses, shaped as Microsoft sends them.

Harness-only: the product (shared/) reads the catalog to classify; only the fakes and the tests need to
produce a reply from a row, so that code lives here and is not shipped with the function.
"""

from __future__ import annotations

import json

from shared.catalog import CatalogEntry, entry


def _require(name: str, transport: str | None) -> CatalogEntry:
    e = entry(name)
    if e.transport != transport:
        raise ValueError(f"{name} is a {e.transport or 'no-reply'} entry, not {transport}")
    return e


def smtp_reply(name: str, /, **fmt: object) -> tuple[int, str]:
    """``(reply code, text)`` where text starts with the enhanced status code, e.g.
    ``(535, "5.7.3 Authentication unsuccessful [host]")``. On the wire: ``f"{code} {text}"``."""
    e = _require(name, "smtp")
    assert e.status is not None
    return e.status, f"{e.code} {e.render(**fmt)}"


def graph_error(
    name: str,
    /,
    *,
    request_id: str,
    client_request_id: str,
    date: str,
    retry_after: int | float | str | None = None,
    **fmt: object,
) -> tuple[int, dict[str, str], bytes | None]:
    """``(status, headers, body)`` of a Graph error response.

    The body is ``{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}``
    except for rows without a JSON code (413: plain text). Headers carry ``request-id`` and
    ``client-request-id``, and ``Retry-After`` when the row says so (``retry_after``, default "1")."""
    e = _require(name, "graph")
    assert e.status is not None
    headers = {"request-id": request_id, "client-request-id": client_request_id}
    if e.retry_after:
        headers["Retry-After"] = str(retry_after if retry_after is not None else 1)
    message = e.render(**fmt)
    if not e.code:
        headers["Content-Type"] = "text/html" if message.lstrip().startswith("<") else "text/plain; charset=utf-8"
        return e.status, headers, message.encode()
    headers["Content-Type"] = "application/json"
    error: dict[str, object] = {"code": e.code, "message": message}
    if e.inner_error:
        error["innerError"] = {"date": date, "request-id": request_id, "client-request-id": client_request_id}
    body = {"error": error}
    return e.status, headers, json.dumps(body).encode()


def entra_error(
    name: str, /, *, trace_id: str, correlation_id: str, timestamp: str, **fmt: object
) -> tuple[int, dict[str, object]]:
    """``(status, body)`` of a token endpoint error, shaped like Entra's (``timestamp`` as
    ``"2025-01-01 00:00:00Z"``)."""
    e = _require(name, "entra")
    assert e.status is not None and e.oauth_error is not None
    number = int(e.code.removeprefix("AADSTS")) if e.code.startswith("AADSTS") else None
    description = (
        f"{e.render(**fmt)}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
    )
    body: dict[str, object] = {
        "error": e.oauth_error,
        "error_description": description,
        "error_codes": [number] if number is not None else [],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    }
    if number is not None:
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={number}"
    return e.status, body


def keyvault_error(name: str, /, **fmt: object) -> tuple[int, dict[str, object]]:
    """``(status, body)`` of a Key Vault data-plane error:
    ``{"error":{"code","message"[,"innererror":{"code"}]}}``."""
    e = _require(name, "keyvault")
    assert e.status is not None
    error: dict[str, object] = {"code": e.code, "message": e.render(**fmt)}
    if e.inner_code:
        error["innererror"] = {"code": e.inner_code}
    return e.status, {"error": error}
