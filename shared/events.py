"""One structured log event per outcome (its texts redacted by ``shared.redaction``).

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
from collections.abc import Iterable, Mapping
from typing import Any

from shared.redaction import EVENT_DETAIL_MAX, redact_clip

LOGGER_NAME = "outbox"
EVENT_OUTCOME = "outbox.outcome"

logger = logging.getLogger(LOGGER_NAME)


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
        dims["detail"] = redact_clip(detail, EVENT_DETAIL_MAX)
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
