"""The HTTP functions' request handling: thin translation between HTTP and the pipeline.

Status codes (docs/openapi.yaml lists them): 202 queued; 200 sent (or already sent); 400 invalid
message; 409 the same id is being sent right now, or was poisoned; 413 too large for a queue message
or the mailbox; 422 recipient rejected; 429 throttled (Retry-After); 503 transient (Retry-After);
504 ambiguous (may have been delivered: do not resend, read the status); 502 the service refused
(auth, a delegated sign-in that needs renewing, permission, quota, a mailbox that does not exist); 500 outbox's own configuration; 403 a sender or
attachment container this deployment does not allow. Every answer comes within OUTBOX_API_DEADLINE_S
(503 with Retry-After otherwise), and no body makes a 500.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import azure.functions as func

if TYPE_CHECKING:
    from shared.pipeline import Outcome
    from shared.storage.status import StatusRow

log = logging.getLogger("outbox.http")

_STATUS_BY_CATEGORY = {
    "invalid_message": 400,
    "recipient": 422,
    "size": 413,
    "throttled": 429,
    "transient": 503,
    "auth": 502,
    "signin_required": 502,
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
    from shared.storage.queues import error_object

    return {**extra, "error": error_object(error)}


def _status_url(req: func.HttpRequest, message_id: str) -> str:
    parts = urlsplit(req.url)
    path = parts.path
    base = path[: -len("send")] if path.endswith("send") else "/api/"
    return urlunsplit((parts.scheme, parts.netloc, f"{base}messages/{message_id}", "", ""))


def _retry_after(seconds: float | None) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))} if seconds else {}


def _invalid(errors: list[dict[str, str]], detail: str, *, not_permitted: bool = False,
             across_fields: bool = False) -> func.HttpResponse:
    """400 for a malformed message; 422 for a well-formed one a rule across its fields refuses (no schema
    can say "a header name once, whatever its case"); 403 for one this deployment does not allow."""
    code = "not_permitted" if not_permitted else "invalid_message"
    status = 403 if not_permitted else 422 if across_fields else 400
    return _json(status, {"error": {
        "category": "invalid_message", "code": code, "detail": detail, "errors": errors, "retryable": False}})


def _config_failure(exc: Exception) -> func.HttpResponse:
    from shared.redaction import redact

    log.error("outbox is not configured: %s", redact(str(exc)))
    return _json(500, {"error": {"category": "config", "code": "config", "detail": redact(str(exc)),
                                 "retryable": False}})


def _late(late: Any, req: func.HttpRequest, *, mode: str, retry_after_s: float,
          reason: str | None = None) -> func.HttpResponse:
    """503 for a deadline that passed: what the caller's message may have become, and that resending it
    with the same id is safe (ids deduplicate)."""
    step = "sent" if mode == "now" else "queued"
    body: dict[str, Any] = {}
    if late.message_id:
        body = {"id": late.message_id, "statusUrl": _status_url(req, late.message_id)}
    maybe = bool(late.may_have_committed)
    body["mayHaveBeenQueued" if mode != "now" else "mayHaveBeenSent"] = maybe
    body["resendSafe"] = True
    body["error"] = {
        "category": "transient", "code": "outbox.deadline", "retryable": True,
        "detail": (reason or f"storage or Key Vault did not answer within {retry_after_s:g} s") + "; the message "
        + (f"may have been {step}" if maybe else f"was not {step}"),
        "hint": "send the same request again (with the same id) after Retry-After: the id keeps it single",
    }
    log.warning("answered 503 (%s; mode=%s, id=%s, may have been %s: %s)",
                reason or f"{retry_after_s:g} s deadline", mode, late.message_id, step, maybe)
    return _json(503, body, _retry_after(retry_after_s))


def _unavailable(req: func.HttpRequest, progress: Any, exc: Exception, *, mode: str,
                 retry_after_s: float) -> func.HttpResponse:
    """A dependency failed outright (refused, 5xx) inside the deadline: the same answer as a late one."""
    from shared.deadline import Abandoned, Late
    from shared.redaction import EXCEPTION_TEXT_MAX, redact_clip

    log.warning("a dependency failed (mode=%s): %s: %s", mode, type(exc).__name__,
                redact_clip(str(exc), EXCEPTION_TEXT_MAX))
    if progress.abandoned:
        raise Abandoned  # the caller had its 503 already
    late: Late[Any] = Late(progress.message_id, may_have_committed=progress.committing)
    return _late(late, req, mode=mode, retry_after_s=retry_after_s,
                 reason=f"a dependency failed ({type(exc).__name__})")


def _id_conflict(req: func.HttpRequest, error: Any, message_id: str, state: str) -> func.HttpResponse:
    return _json(409, _error_body(error, id=message_id, state=state, statusUrl=_status_url(req, message_id)))


def handle_send(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import OutboxError
    from shared.message import InvalidMessage, decode_body
    from shared.settings import SettingsError

    given = req.params.get("mode")
    mode = "queue" if given is None else given.lower()
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
    except Exception as exc:  # a hostile body must never make a 500
        log.warning("request body refused while decoding: %s", type(exc).__name__)
        return _invalid([{"field": "$", "message": f"the body could not be decoded ({type(exc).__name__})"}],
                        "the request body is not a JSON message object")

    try:
        from function_app.runtime import runtime

        parts = runtime()
    except (SettingsError, OutboxError) as exc:
        return _config_failure(exc)

    from shared.deadline import Abandoned, Late, run_with_deadline

    pipe = parts.pipeline
    deadline = parts.settings.api_deadline_s
    if mode == "queue":
        from shared.acceptance import NotAccepted
        from shared.pipeline import IdConflict

        def enqueue(progress: Any) -> func.HttpResponse:
            try:
                done = pipe.enqueue(data, progress=progress)
            except NotAccepted as exc:
                return _invalid(exc.to_list(), str(exc.error), not_permitted=exc.not_permitted,
                                across_fields=exc.only_across_fields)
            except IdConflict as exc:
                return _id_conflict(req, exc.error, exc.message_id, exc.row.state)
            except OutboxError as exc:
                if exc.category == "transient":
                    return _unavailable(req, progress, exc, mode=mode, retry_after_s=deadline)
                return _json(_STATUS_BY_CATEGORY.get(exc.category, 500), _error_body(exc))
            except Abandoned:
                raise
            except Exception as exc:
                return _unavailable(req, progress, exc, mode=mode, retry_after_s=deadline)
            url = _status_url(req, done.message_id)
            answer: dict[str, Any] = {"id": done.message_id, "state": done.row.state, "statusUrl": url}
            if done.duplicate:
                answer["duplicate"] = True
            if done.row.state == "poisoned":
                return _json(409, {**answer, "error": {
                    "category": "conflict", "code": "poisoned",
                    "detail": "this message was poisoned; requeue it with the CLI (outbox poison requeue) "
                    "or send it with a new id"}})
            return _json(200 if done.row.state == "sent" else 202, answer, {"Location": url})

        result = run_with_deadline(enqueue, deadline)
        return _late(result, req, mode=mode, retry_after_s=deadline) if isinstance(result, Late) else result

    client_request_id = req.headers.get("x-ms-client-request-id")

    def send_now(progress: Any) -> Outcome | func.HttpResponse:
        try:
            return pipe.send_now(data, request_id=client_request_id, progress=progress)
        except Abandoned:
            raise
        except Exception as exc:  # storage failed around the send: the outcome is not known here
            return _unavailable(req, progress, exc, mode=mode, retry_after_s=deadline)

    outcome = run_with_deadline(send_now, deadline)
    if isinstance(outcome, Late):
        return _late(outcome, req, mode=mode, retry_after_s=deadline)
    if isinstance(outcome, func.HttpResponse):
        return outcome
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
    if outcome.kind == "conflict":
        assert outcome.error is not None
        return _id_conflict(req, outcome.error, outcome.message_id, outcome.state or "queued")
    if outcome.kind == "in_flight":
        return _json(409, {**base, "error": {"category": "conflict", "code": "in_flight",
                                             "detail": "a message with this id is being sent right now"}},
                     _retry_after(outcome.delay_s))
    if outcome.invalid is not None:
        return _invalid(outcome.invalid, outcome.error.detail if outcome.error else "invalid message",
                        not_permitted=outcome.extra.get("notPermitted", False),
                        across_fields=outcome.extra.get("acrossFields", False))
    err = outcome.error
    assert err is not None
    if outcome.ambiguous:
        return _json(504, _error_body(err, **base, ambiguous=True))
    status = _STATUS_BY_CATEGORY.get(err.category, 502)
    if status == 500 and err.transport in ("graph", "smtp"):
        # Microsoft refused the send for a reason the catalog files under config (e.g. no mailbox with the
        # message's from): the message chose it, so it is not outbox's own failure.
        status = 502
    if outcome.kind == "retry" and status not in (429, 503):
        status = 503
    headers = _retry_after(outcome.delay_s) if outcome.kind == "retry" else {}
    return _json(status, _error_body(err, **base), headers)


def handle_status(req: func.HttpRequest) -> func.HttpResponse:
    from shared.errors import OutboxError
    from shared.message import ID_RULE, valid_message_id
    from shared.settings import SettingsError

    message_id = req.route_params.get("id") or ""
    if not valid_message_id(message_id):
        return _json(400, {"error": {"code": "bad_id", "detail": f"ids are {ID_RULE}"}})
    try:
        from function_app.runtime import runtime

        parts = runtime()
    except (SettingsError, OutboxError) as exc:
        return _config_failure(exc)

    from shared.deadline import Late, run_with_deadline

    deadline = parts.settings.api_deadline_s

    def read(_progress: Any) -> StatusRow | Exception | None:
        try:
            return parts.status.get(message_id)
        except Exception as exc:
            return exc

    row = run_with_deadline(read, deadline)
    if isinstance(row, Exception):
        log.warning("reading status row %s failed: %s", message_id, type(row).__name__)
    if isinstance(row, Late | Exception):
        return _json(503, {"id": message_id, "error": {
            "category": "transient", "code": "outbox.deadline", "retryable": True,
            "detail": f"the status table did not answer within {deadline:g} s"}}, _retry_after(deadline))
    if row is None:
        return _json(404, {"error": {"code": "not_found", "detail": f"no message with id {message_id}"}})
    return _json(200, row.public())
