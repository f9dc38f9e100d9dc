"""One structured log event per outcome, and the redaction every logged or poisoned text goes through.

The event is a normal `logging` record whose message is `outbox.outcome {json}` and whose `extra`
carries the same fields under `custom_dimensions`. Two consumers are served without extra packages:
- Azure Functions forwards the worker's log messages to Application Insights `traces`; the JSON in the
  message is queryable with KQL (`parse_json(substring(message, 15))`).
- An OpenTelemetry / OpenCensus exporter, if the app adds one, turns `custom_dimensions` into
  customDimensions.
Events never carry subjects, bodies, addresses of recipients, tokens or keys: only ids, the sending
mailbox, counts and the classification.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import redact as _errors_redact

LOGGER_NAME = "outbox"
EVENT_OUTCOME = "outbox.outcome"

logger = logging.getLogger(LOGGER_NAME)

_REDACTED = "[redacted]"

# Order matters: PEM blocks first (they contain base64 that other rules would only partly catch).
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S), "[redacted pem]"),
    # JWTs: header.payload.signature, all base64url; headers start with eyJ ("{\"").
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted jwt]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + _REDACTED),
    # The XOAUTH2 initial response, raw and base64 ("user=" -> "dXNlcj").
    (re.compile(r"user=[^\s\x01]*\x01auth=[^\x01]*\x01\x01"), "[redacted xoauth2]"),
    (re.compile(r"dXNlcj[A-Za-z0-9+/=]{16,}"), "[redacted xoauth2]"),
    (re.compile(r"(?i)\b(AUTH\s+XOAUTH2)\s+\S+"), r"\1 " + _REDACTED),
    # Secrets inside connection strings, SAS tokens and form bodies.
    (re.compile(r"(?i)\b(AccountKey|SharedAccessSignature|client_secret|client_assertion|"
                r"access_token|refresh_token|sig|password)=([^;&\s\"']+)"), r"\1=" + _REDACTED),
    (re.compile(r"(?i)(\"(?:access_token|refresh_token|client_secret|client_assertion|password|value)\""
                r"\s*:\s*)\"[^\"]*\""), r'\1"' + _REDACTED + '"'),
)


def redact(text: str | None) -> str | None:
    """Remove tokens, keys, certificates and XOAUTH2 strings from a text that may be logged: the
    catalog's rules (shared.errors.redact) plus a second pass for shapes seen in our own logs."""
    if not text:
        return text
    text = _errors_redact(text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def clip(text: str | None, limit: int = 1000) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def outcome_event(
    outcome: str,
    *,
    message_id: str | None,
    mailbox: str | None,
    transport: str | None,
    attempt: int,
    category: str | None = None,
    code: str | None = None,
    status: int | None = None,
    request_ids: Iterable[str] = (),
    duration_ms: float | None = None,
    queue_message_id: str | None = None,
    dequeue_count: int | None = None,
    delay_s: float | None = None,
    detail: str | None = None,
    hint: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of one outcome event (also what tests assert on)."""
    dims: dict[str, Any] = {
        "event": EVENT_OUTCOME,
        "outcome": outcome,
        "messageId": message_id,
        "mailbox": mailbox,
        "transport": transport,
        "attempt": attempt,
        "category": category,
        "code": code,
        "status": status,
        "requestIds": [r for r in request_ids if r],
        "durationMs": None if duration_ms is None else round(duration_ms, 2),
    }
    if queue_message_id is not None:
        dims["queueMessageId"] = queue_message_id
    if dequeue_count is not None:
        dims["dequeueCount"] = dequeue_count
    if delay_s is not None:
        dims["delayS"] = round(delay_s, 3)
    if detail:
        dims["detail"] = clip(redact(detail), 500)
    if hint:
        dims["hint"] = hint
    if extra:
        dims.update(extra)
    return dims


def log_outcome(dims: Mapping[str, Any], *, log: logging.Logger | None = None) -> None:
    """Emit the event: WARNING for poison and failed invocations (someone must act), INFO otherwise."""
    level = logging.WARNING if dims.get("outcome") in ("poisoned", "error") else logging.INFO
    text = json.dumps(dims, separators=(",", ":"), sort_keys=True, default=str)
    (log or logger).log(level, "%s %s", EVENT_OUTCOME, text, extra={"custom_dimensions": dict(dims)})
