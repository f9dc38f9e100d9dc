"""What a run with failures leaves in the logs: one queryable event per outcome, and no secrets or bodies."""

from __future__ import annotations

import json
import logging
import re

import pytest

from tests.e2e.conftest import NOREPLY, OTHER, SENDER, Stack, mail

BODY_MARKERS = ("SUBJECT-MARKER-7f3a", "TEXT-MARKER-91bc", "HTML-MARKER-04de", "ATTACHMENT-MARKER-55aa")
SECRET_PATTERNS = {
    "jwt": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
    "bearer": re.compile(r"(?i)bearer\s+(?!\[redacted)[A-Za-z0-9._-]{20,}"),
    "xoauth2": re.compile(r"dXNlcj[A-Za-z0-9+/]{20,}|user=[^\s]*\x01auth="),
    "pem": re.compile(r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----"),
    "assertion": re.compile(r"client_assertion=(?!\[redacted)[A-Za-z0-9._-]{20,}"),
}


def _secret_body(**fields: object) -> dict[str, object]:
    import base64

    return mail(subject=BODY_MARKERS[0], text=BODY_MARKERS[1], html=f"<p>{BODY_MARKERS[2]}</p>",
                attachments=[{"name": "a.txt", "contentBase64": base64.b64encode(BODY_MARKERS[3].encode()).decode()}],
                **fields)


def test_a_run_with_failures_logs_one_event_per_outcome_and_no_secrets(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack.harness.apply_scenario({
        "apps": {"outbox-sender": {"smtp": {"full_access": [SENDER], "send_as": [SENDER]}}},
    })
    stack.harness.set_fault(service="graph", catalog="graph.too_many_requests", retry_after=1, times=1,
                            mailbox=SENDER)
    stack.enqueue(_secret_body(id="log-ok-graph"))
    stack.enqueue(_secret_body(id="log-ok-smtp", transport="smtp"))
    stack.enqueue(_secret_body(id="log-535", transport="smtp", **{"from": NOREPLY}))
    stack.enqueue(_secret_body(id="log-403", **{"from": OTHER}))
    stack.enqueue(_secret_body(id="log-invalid", to=["not-an-address"]))
    stack.enqueue(f"not json {BODY_MARKERS[1]}")
    for message_id in ("log-ok-graph", "log-ok-smtp"):
        stack.wait_state(message_id, "sent", timeout=30)
    envelopes = stack.poison(count=4, timeout=30)
    stack.wait_idle()

    events = [r.custom_dimensions for r in caplog.records
              if isinstance(getattr(r, "custom_dimensions", None), dict)
              and r.custom_dimensions.get("event") == "outbox.outcome"]
    assert len(events) == stack.host.stats.invocations  # exactly one event per invocation
    outcomes = {(e["messageId"], e["outcome"]) for e in events}
    assert ("log-ok-graph", "deferred") in outcomes and ("log-ok-graph", "sent") in outcomes  # a 429: no attempt
    assert {("log-535", "poisoned"), ("log-403", "poisoned"), ("log-invalid", "poisoned")} <= outcomes
    for e in events:
        assert {"messageId", "mailbox", "transport", "attempt", "category", "code", "requestIds",
                "durationMs"} <= set(e)
    sent = next(e for e in events if e["messageId"] == "log-ok-smtp" and e["outcome"] == "sent")
    assert sent["mailbox"] == SENDER and sent["transport"] == "smtp" and sent["attempt"] == 1 and sent["requestIds"]
    raop = next(e for e in events if e["messageId"] == "log-403")
    assert (raop["category"], raop["code"], raop["status"]) == ("permission", "ErrorAccessDenied", 403)
    retry = next(e for e in events if e["messageId"] == "log-ok-graph" and e["outcome"] == "deferred")
    assert retry["category"] == "throttled" and retry["requestIds"] and retry["delayS"] >= 1
    assert retry["attempt"] == 0 and retry["throttledTries"] == 1
    # The message text of each event is the same JSON, for KQL on the traces table.
    texts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox.outcome ")]
    assert len(texts) == len(events) and json.loads(texts[0][len("outbox.outcome "):])["event"] == "outbox.outcome"

    error_fields = json.dumps([e["error"] for e in envelopes if isinstance(e, dict)])
    logs = caplog.text + "\n".join(str(getattr(r, "custom_dimensions", "")) for r in caplog.records)
    for name, pattern in SECRET_PATTERNS.items():
        assert not pattern.search(logs), f"{name} in logs"
        assert not pattern.search(error_fields), f"{name} in poison error fields"
    for marker in BODY_MARKERS:
        assert marker not in logs, f"message body text {marker} in logs"
        assert marker not in error_fields
