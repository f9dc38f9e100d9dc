"""The HTTP functions' request handling: thin translation between HTTP and the pipeline.

Status codes (docs/openapi.yaml lists them): 202 queued; 200 sent (or already sent); 400 invalid
message; 409 the same id is being sent right now, or was poisoned; 413 too large for a queue message
or the mailbox; 422 recipient rejected; 429 throttled (Retry-After); 503 transient (Retry-After);
504 ambiguous (may have been delivered: do not resend, read the status); 502 the service refused
(auth, permission, quota); 500 configuration.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import azure.functions as func

log = logging.getLogger("outbox.http")

_STATUS_BY_CATEGORY = {
    "invalid_message": 400,
    "recipient": 422,
    "size": 413,
    "throttled": 429,
    "transient": 503,
    "auth": 502,
    "permission": 502,
    "quota": 502,
    "unknown": 502,
    "config": 500,
}
MAX_BODY_BYTES = 4 * 1024 * 1024


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status,
        headers=headers or {},
        mimetype="application/json",
        charset="utf-8",
    )


def _error_body(error: Any, **extra: Any) -> dict[str, Any]:
    from shared.queues import error_object

    return {**extra, "error": error_object(error)}


def _status_url(req: func.HttpRequest, message_id: str) -> str:
    parts = urlsplit(req.url)
    path = parts.path
    base = path[: -len("send")] if path.endswith("send") else "/api/"
    return urlunsplit((parts.scheme, parts.netloc, f"{base}messages/{message_id}", "", ""))


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))} if seconds else {}


def _invalid(errors: list[dict[str, str]], detail: str) -> func.HttpResponse:
    return _json(400, {"error": {"category": "invalid_message", "code": "invalid_message", "detail": detail,
                                 "errors": errors, "retryable": False}})


def _config_failure(exc: Exception) -> func.HttpResponse:
    from shared.errors import redact

    log.error("outbox is not configured: %s", redact(str(exc)))
    return _json(500, {"error": {"category": "config", "code": "config", "detail": redact(str(exc)),
                                 "retryable": False}})


def handle_send(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import OutboxError
    from shared.message import InvalidMessage, decode_body
    from shared.settings import SettingsError

    mode = (req.params.get("mode") or "queue").lower()
    if mode not in ("queue", "now"):
        return _invalid([{"field": "mode", "message": "must be queue or now"}], f"unknown mode {mode!r}")
    body = req.get_body() or b""
    if len(body) > MAX_BODY_BYTES:
        return _json(413, {"error": {"category": "size", "code": "request_too_large", "retryable": False,
                                     "detail": f"{len(body)} bytes; at most {MAX_BODY_BYTES}",
                                     "hint": "reference large attachments as blobs"}})
    try:
        data = decode_body(body)
    except InvalidMessage as exc:
        return _invalid(exc.to_list(), "the request body is not a JSON message object")

    try:
        from function_app.runtime import pipeline

        pipe = pipeline()
    except (SettingsError, OutboxError) as exc:
        return _config_failure(exc)

    if mode == "queue":
        try:
            message_id, row = pipe.enqueue(data)
        except InvalidMessage as exc:
            return _invalid(exc.to_list(), str(exc))
        except OutboxError as exc:
            return _json(_STATUS_BY_CATEGORY.get(exc.category, 500), _error_body(exc))
        url = _status_url(req, message_id)
        state = row.state if row is not None else "queued"
        return _json(202, {"id": message_id, "state": state, "statusUrl": url}, {"Location": url})

    outcome = pipe.send_now(data, request_id=req.headers.get("x-ms-client-request-id"))
    url = _status_url(req, outcome.message_id)
    base = {"id": outcome.message_id, "state": outcome.state, "statusUrl": url}
    if outcome.kind == "sent":
        return _json(200, {**base, "transport": outcome.transport, "requestIds": list(outcome.request_ids),
                           "internetMessageId": outcome.internet_message_id, "sentVia": outcome.sent_via,
                           "possiblyDuplicated": outcome.possibly_duplicated, "attempt": outcome.attempt})
    if outcome.kind == "duplicate":
        if outcome.state == "sent":
            return _json(200, {**base, "duplicate": True, "transport": outcome.transport,
                               "requestIds": list(outcome.request_ids)})
        return _json(409, {**base, "duplicate": True, "error": {
            "category": "conflict", "code": "poisoned",
            "detail": "a message with this id was poisoned; requeue it with the CLI or use a new id"}})
    if outcome.kind == "in_flight":
        return _json(409, {**base, "error": {"category": "conflict", "code": "in_flight",
                                             "detail": "a message with this id is being sent right now"}},
                     _retry_after(outcome.delay_s))
    if outcome.invalid is not None:
        return _invalid(outcome.invalid, outcome.error.detail if outcome.error else "invalid message")
    err = outcome.error
    assert err is not None
    if outcome.ambiguous:
        return _json(504, _error_body(err, **base, ambiguous=True))
    status = _STATUS_BY_CATEGORY.get(err.category, 502)
    if outcome.kind == "retry" and status not in (429, 503):
        status = 503
    headers = _retry_after(outcome.delay_s) if outcome.kind == "retry" else {}
    return _json(status, _error_body(err, **base), headers)


def handle_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import OutboxError
    from shared.pipeline import valid_message_id
    from shared.settings import SettingsError

    message_id = req.route_params.get("id") or ""
    if not valid_message_id(message_id):
        return _json(400, {"error": {"code": "bad_id", "detail": "ids are 1-128 characters of A-Z a-z 0-9 . _ : @ -"}})
    try:
        from function_app.runtime import runtime

        row = runtime().status.get(message_id)
    except (SettingsError, OutboxError) as exc:
        return _config_failure(exc)
    if row is None:
        return _json(404, {"error": {"code": "not_found", "detail": f"no message with id {message_id}"}})
    return _json(200, row.public())
