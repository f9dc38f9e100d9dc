"""Error responses of the fake Graph (and of the Outlook upload URL), always in Graph's exact shape.

Every shape comes from ``shared.catalog``. A few answers the fake must give have no catalog row yet;
they live in ``LOCAL_SHAPES`` below, each with its source, and are used only while the catalog lacks a
row of the same name (so the moment the catalog engineer adds it, the catalog wins).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from aiohttp import web

from shared import catalog


@dataclass(frozen=True)
class LocalShape:
    status: int
    code: str
    text: str
    source: str
    # Outlook REST (the upload URL, outlook.office.com) answers {"error":{"code","message"}} without
    # innerError; Graph always adds innerError.
    outlook: bool = False


# NOT yet in shared/catalog.py: reported to the catalog engineer with these sources.
LOCAL_SHAPES: dict[str, LocalShape] = {
    "graph.me_app_only": LocalShape(
        400, "BadRequest", "/me request is only valid with delegated authentication flow.",
        "[obs] pnp/pnpcore#905 (full body), msgraph-sdk-php#1163, edmozley/freeitsm#67",
    ),
    "graph.token_missing": LocalShape(
        401, "InvalidAuthenticationToken", "Access token is empty.",
        "[obs] Graph's answer to a request without Authorization header (widely quoted)",
    ),
    "graph.invalid_json": LocalShape(
        400, "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of "
        "valid JSON format.",
        "[obs] Graph's answer to an unparsable body (widely quoted)",
    ),
    "graph.upload_too_small": LocalShape(
        400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
        "Attachment size should not be less than the minimum size.",
        "code: microsoft-graph-docs-contrib concepts/outlook-large-attachments.md (Errors); status 400: public "
        "code handling it; text: assumption",
    ),
    "graph.upload_authorization": LocalShape(
        401, "InvalidAudienceForResource",
        "The audience claim value is invalid for current resource. Audience claim is '{audience}', request "
        "url is '{url}'.",
        "msgraph-sdk-java#409 (Authorization header sent to the uploadUrl); the docs say not to send one",
        outlook=True,
    ),
    "graph.upload_range": LocalShape(
        400, "InvalidContentRange", "The Content-Range header is missing or does not match the expected range.",
        "assumption: Outlook requires in-order ranges (outlook-large-attachments.md) but its error is not documented",
        outlook=True,
    ),
    "graph.upload_session_not_found": LocalShape(
        404, "ErrorItemNotFound", "The upload session was not found or has expired.",
        "assumption (code is Exchange's usual not-found code; text not verified)",
        outlook=True,
    ),
    "graph.item_not_found": LocalShape(
        404, "ErrorItemNotFound", "The specified object was not found in the store.",
        "[obs] Graph/EWS answer for an unknown message id (widely quoted)",
    ),
}


def graph_date(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S")


def error_parts(
    name: str,
    *,
    request_id: str,
    client_request_id: str,
    retry_after: int | None = None,
    fmt: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for a catalog row, else for a local shape."""
    fmt = dict(fmt or {})
    if name in catalog.BY_NAME:
        status, headers, body = catalog.graph_error(
            name, request_id=request_id, client_request_id=client_request_id, date=graph_date(),
            retry_after=retry_after, **fmt,
        )
        headers = dict(headers)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return status, headers, body or b""
    shape = LOCAL_SHAPES[name]
    error: dict[str, object] = {"code": shape.code, "message": shape.text.format_map(_Defaulting(fmt))}
    if not shape.outlook:
        error["innerError"] = {
            "date": graph_date(), "request-id": request_id, "client-request-id": client_request_id,
        }
    headers = {
        "request-id": request_id,
        "client-request-id": client_request_id,
        "Content-Type": "application/json",
    }
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return shape.status, headers, json.dumps({"error": error}).encode()


def error_response(name: str, **kwargs: object) -> web.Response:
    status, headers, body = error_parts(name, **kwargs)  # type: ignore[arg-type]
    return web.Response(status=status, headers=headers, body=body)


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""
