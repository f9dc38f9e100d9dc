"""The HTTP functions through the local host: POST /api/send (queue | now), GET /api/messages/{id}."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from tests.e2e.conftest import OTHER, Stack, mail


def call(stack: Stack, method: str, path: str, body: Any = None, *, key: str | None = "test-key",
         raw: bytes | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-functions-key"] = key
    req = urllib.request.Request(f"{stack.host.base_url}/api/{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        return exc.code, dict(exc.headers), json.loads(text) if text else {}


def test_queue_mode_answers_202_with_a_status_url_that_reaches_sent(stack: Stack) -> None:
    status, headers, body = call(stack, "POST", "send", mail())
    assert status == 202 and body["state"] == "queued"
    assert body["statusUrl"].endswith(f"/api/messages/{body['id']}") and headers["Location"] == body["statusUrl"]
    stack.wait_state(body["id"], "sent")
    status, _, row = call(stack, "GET", f"messages/{body['id']}")
    assert status == 200 and row["state"] == "sent" and row["transport"] == "graph" and row["requestIds"]


def test_now_mode_sends_at_once(stack: Stack) -> None:
    status, _, body = call(stack, "POST", "send?mode=now", mail(id="now-1", transport="smtp"))
    assert status == 200 and body["state"] == "sent" and body["transport"] == "smtp"
    assert body["internetMessageId"].startswith("<outbox.")
    assert len(stack.harness.deliveries(transport="smtp")) == 1
    again, _, dup = call(stack, "POST", "send?mode=now", mail(id="now-1", transport="smtp"))
    assert again == 200 and dup["duplicate"] is True
    assert len(stack.harness.deliveries(transport="smtp")) == 1


def test_invalid_message_is_400_with_every_field(stack: Stack) -> None:
    status, _, body = call(stack, "POST", "send", {"from": "x", "to": []})
    assert status == 400 and body["error"]["category"] == "invalid_message"
    fields = {e["field"] for e in body["error"]["errors"]}
    assert {"from", "to"} <= fields
    status, _, body = call(stack, "POST", "send", raw=b"not json")
    assert status == 400


def test_now_mode_classified_errors_have_fitting_statuses(stack: Stack) -> None:
    status, _, body = call(stack, "POST", "send?mode=now", mail(id="now-raop", **{"from": OTHER}))
    assert status == 502 and body["error"]["category"] == "permission" and body["error"]["hint"]
    stack.harness.set_fault(service="graph", action="drop_after_body", times=1)
    status, _, body = call(stack, "POST", "send?mode=now", mail(id="now-amb"))
    assert status == 504 and body["ambiguous"] is True and body["state"] == "ambiguous"
    stack.harness.set_fault(service="graph", catalog="graph.too_many_requests", retry_after=3, times=1)
    status, headers, body = call(stack, "POST", "send?mode=now", mail(id="now-429"))
    assert status == 429 and headers["Retry-After"] == "3" and body["error"]["category"] == "throttled"
    # The mailbox is now paused for 3 s in this process: the next call is answered without a request.
    before = stack.harness.state.count("graph")
    status, headers, body = call(stack, "POST", "send?mode=now", mail(id="now-paused"))
    assert status == 429 and body["error"]["code"] == "outbox.paused" and int(headers["Retry-After"]) <= 3
    assert stack.harness.state.count("graph") == before


def test_status_of_unknown_and_malformed_ids(stack: Stack) -> None:
    assert call(stack, "GET", "messages/never-seen")[0] == 404
    assert call(stack, "GET", "messages/bad%20id")[0] == 400


def test_function_key_is_required(stack: Stack) -> None:
    assert call(stack, "POST", "send", mail(), key=None)[0] == 401
    assert call(stack, "GET", "messages/x", key="wrong")[0] == 401
