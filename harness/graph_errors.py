"""Error responses of the fake Graph (and of the Outlook upload URL), in the exact shape from the catalog."""

from __future__ import annotations

import datetime as dt
import json

from aiohttp import web

from harness import replies

# Answered by the pre-authenticated upload URL, which is Outlook REST (outlook.office.com), not Graph:
# its error body is {"error":{"code","message"}} without Graph's innerError.
OUTLOOK_REST_ENTRIES = frozenset(
    {
        "graph.upload_authorization", "graph.upload_range", "graph.upload_session_not_found",
        # [obs] microsoft-graph-docs-contrib#2561: {'error': {'code': 'ErrorMessageSizeExceeded', 'message': ...}}
        "graph.message_size_exceeded",
    }
)


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
    """(status, headers, body) of catalog row ``name``; Retry-After when given (fault rules, limits)."""
    status, headers, body = replies.graph_error(
        name,
        request_id=request_id,
        client_request_id=client_request_id,
        date=graph_date(),
        retry_after=retry_after,
        **(fmt or {}),
    )
    headers = dict(headers)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if name in OUTLOOK_REST_ENTRIES and body:
        document = json.loads(body)
        document["error"].pop("innerError", None)
        body = json.dumps(document).encode()
    return status, headers, body or b""


def error_response(
    name: str,
    *,
    request_id: str,
    client_request_id: str,
    retry_after: int | None = None,
    fmt: dict[str, str] | None = None,
) -> web.Response:
    status, headers, body = error_parts(name, request_id=request_id, client_request_id=client_request_id,
                                        retry_after=retry_after, fmt=fmt)
    return web.Response(status=status, headers=headers, body=body)
