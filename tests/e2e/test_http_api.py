"""The HTTP functions through the local host: POST /api/send (queue | now), GET /api/messages/{id}."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import OTHER, Stack, call, mail


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


def test_status_of_a_poisoned_message_shows_the_last_error(stack: Stack) -> None:
    status, _, body = call(stack, "POST", "send", mail(id="st-poison", **{"from": OTHER}))
    assert status == 202
    stack.wait_state("st-poison", "poisoned")
    status, _, row = call(stack, "GET", "messages/st-poison")
    assert status == 200 and row["state"] == "poisoned" and row["lastError"]["category"] == "permission"
    # The same id again with mode=now: an operator owns it now.
    status, _, body = call(stack, "POST", "send?mode=now", mail(id="st-poison", **{"from": OTHER}))
    assert status == 409 and body["duplicate"] is True and body["error"]["code"] == "poisoned"


def test_now_mode_while_another_copy_is_sending_is_409_with_retry_after(stack: Stack) -> None:
    stack.status.claim("st-busy", owner="another-queue-message", lease_s=30, transport="graph", mailbox=None)
    status, headers, body = call(stack, "POST", "send?mode=now", mail(id="st-busy"))
    assert status == 409 and body["error"]["code"] == "in_flight" and 1 <= int(headers["Retry-After"]) <= 31
    assert stack.harness.state.count("graph") == 0


def test_now_mode_recipient_and_transient_failures(stack: Stack) -> None:
    stack.harness.set_fault(service="graph", catalog="graph.invalid_recipients", times=1, operation="sendMail")
    status, _, body = call(stack, "POST", "send?mode=now", mail(id="st-rcpt"))
    assert status == 422 and body["error"]["category"] == "recipient" and body["state"] == "failed"
    stack.harness.set_fault(service="graph", catalog="graph.service_unavailable", times=1, operation="sendMail")
    status, headers, body = call(stack, "POST", "send?mode=now", mail(id="st-503"))
    assert status == 503 and body["error"]["category"] == "transient" and int(headers["Retry-After"]) >= 1
    status, _, row = call(stack, "GET", "messages/st-503")
    assert status == 200 and row["state"] == "retrying" and row["lastError"]["category"] == "transient"


def test_a_request_over_4_mib_is_413_and_an_unknown_mode_400(stack: Stack) -> None:
    status, _, body = call(stack, "POST", "send", raw=b"{" + b" " * (4 * 1024 * 1024) + b"}")
    assert status == 413 and body["error"]["category"] == "size"
    status, _, body = call(stack, "POST", "send?mode=later", mail())
    assert status == 400 and body["error"]["errors"][0]["field"] == "mode"


def test_broken_settings_are_a_500_naming_the_setting(stack_factory: Any) -> None:
    stack = stack_factory(settings={"OUTBOX_MAX_ATTEMPTS": "zero"})
    status, _, body = call(stack, "POST", "send", mail())
    assert status == 500 and body["error"]["category"] == "config" and "OUTBOX_MAX_ATTEMPTS" in body["error"]["detail"]
    status, _, body = call(stack, "GET", "messages/anything")
    assert status == 500 and "OUTBOX_MAX_ATTEMPTS" in body["error"]["detail"]
