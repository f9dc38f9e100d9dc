"""The failures a user meets first, end to end: what is retried, what is poisoned, with which hint."""

from __future__ import annotations

import json
from collections.abc import Callable

from shared.catalog import entry
from tests.e2e.conftest import NOREPLY, OTHER, SENDER, Stack, call, mail

GRAPH_SEND = "sendMail"


def _graph_statuses(stack: Stack) -> list[tuple[int | str, float]]:
    return [(r.status, r.time) for r in stack.harness.state.requests(service="graph") if GRAPH_SEND in r.operation]


def test_access_policy_403_is_poisoned_as_permission(stack: Stack) -> None:
    stack.enqueue(mail(id="raop-1", **{"from": OTHER}))
    [env] = stack.poison()
    assert isinstance(env, dict) and env["schema"] == "outbox.poison/1"
    assert env["error"]["category"] == "permission" and env["error"]["status"] == 403
    assert env["attempts"] == 1 and env["message"]["id"] == "raop-1"
    assert env["error"]["hint"] == entry("graph.access_policy").hint  # the access-policy checklist
    row = stack.wait_state("raop-1", "poisoned")
    assert row.last_category == "permission" and row.last_hint == env["error"]["hint"]
    assert stack.harness.deliveries() == []


def test_429_is_delivered_after_retry_after_not_before(stack: Stack) -> None:
    stack.harness.set_fault(service="graph", catalog="graph.too_many_requests", retry_after=2, times=1)
    stack.enqueue(mail(id="thr-1"))
    row = stack.wait_state("thr-1", "sent", timeout=30)
    assert row.attempts == 1 and row.throttled == 1  # a 429 is not the message's fault: no attempt spent
    statuses = _graph_statuses(stack)
    throttled_at = next(t for s, t in statuses if s == 429)
    [delivery] = stack.harness.deliveries(transport="graph")
    assert delivery.time - throttled_at >= 2.0


def test_503_is_delivered_after_backoff(stack: Stack) -> None:
    stack.harness.set_fault(service="graph", catalog="graph.service_unavailable", times=1)
    stack.enqueue(mail(id="u503"))
    row = stack.wait_state("u503", "sent", timeout=30)
    assert row.attempts == 2 and row.last_code is not None
    assert len(stack.harness.deliveries(transport="graph")) == 1
    statuses = _graph_statuses(stack)
    failed_at = next(t for s, t in statuses if s == 503)
    # OUTBOX_BACKOFF_BASE_S=1: the first retry waits between 0.5 and 1 s (whole seconds on the queue).
    assert stack.harness.deliveries()[0].time - failed_at >= 0.5


def _no_network_calls(stack: Stack) -> None:
    counters = stack.harness.state.counters()
    assert not any(counters.get(s, {}).get("total") for s in ("graph", "smtp", "entra", "keyvault", "msi")), counters


def test_invalid_and_non_json_are_poisoned_at_once_without_network_calls(stack: Stack) -> None:
    stack.enqueue(mail(id="inv-1", to=["nobody"]))
    stack.enqueue("this is not json at all")
    stack.enqueue(mail(id="inv-sender", **{"from": "ceo@elsewhere.example"}))
    stack.enqueue("aGVsbG8gd29ybGQ=")  # base64 of "hello world": not JSON inside
    envs = stack.poison(count=4)
    assert {e["error"]["category"] for e in envs} == {"invalid_message"}
    assert sorted(e["attempts"] for e in envs) == [1, 1, 1, 1]
    raws = sorted(e["message"] for e in envs if isinstance(e["message"], str))
    assert raws == ["aGVsbG8gd29ybGQ=", "this is not json at all"]
    by_id = {e["message"]["id"]: e for e in envs if isinstance(e["message"], dict)}
    assert "OUTBOX_ALLOWED_SENDERS" in by_id["inv-sender"]["error"]["detail"]
    assert "to[0]" in by_id["inv-1"]["error"]["detail"]
    assert by_id["inv-1"]["message"] == mail(id="inv-1", to=["nobody"])
    for message_id in ("inv-1", "inv-sender"):
        row = stack.wait_state(message_id, "poisoned")
        assert row.last_category == "invalid_message" and row.attempts == 1
    stack.wait_idle()
    _no_network_calls(stack)
    assert stack.host.stats.failed == 0


def test_the_same_id_enqueued_twice_is_delivered_once(stack: Stack) -> None:
    stack.enqueue(mail(id="twice-1"))
    stack.enqueue(mail(id="twice-1"))
    stack.wait_state("twice-1", "sent")
    stack.wait_idle()
    assert len(stack.harness.deliveries()) == 1


def test_ambiguous_504_is_not_sent_twice(stack: Stack) -> None:
    # The fake accepts the message, then answers 504 as Graph's gateway does after a slow backend.
    stack.harness.set_fault(service="graph", action="drop_after_body", times=1)
    stack.enqueue(mail(id="amb-1"))
    row = stack.wait_state("amb-1", "sent", timeout=30)
    assert row.sent_via == "lookup" and row.attempts == 2
    stack.wait_idle()
    assert len(stack.harness.deliveries(transport="graph")) == 1


def test_504_reply_without_delivery_is_sent_after_the_lookup_finds_nothing(stack: Stack) -> None:
    stack.harness.set_fault(service="graph", catalog="graph.gateway_timeout", times=1, operation="sendMail")
    stack.enqueue(mail(id="amb-2"))
    row = stack.wait_state("amb-2", "sent", timeout=30)
    # Sent Items can lag: a lookup that misses cannot prove the first attempt did not deliver.
    assert row.sent_via == "send" and row.attempts == 2 and row.possibly_duplicated
    assert len(stack.harness.deliveries(transport="graph")) == 1


def test_a_late_sent_items_copy_is_found_once_the_settle_time_has_passed(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_LOOKUP_SETTLE_S": "3"})
    stack.harness.apply_scenario({"exchange": {"sent_items_delay_s": 2}})
    stack.harness.set_fault(service="graph", action="drop_after_body", times=1)  # delivered, no answer
    stack.enqueue(mail(id="late-1"))
    row = stack.wait_state("late-1", "sent", timeout=30)
    assert row.sent_via == "lookup" and not row.possibly_duplicated
    stack.wait_idle()
    assert len(stack.harness.deliveries(transport="graph")) == 1


def test_without_a_settle_time_a_late_copy_is_missed_and_the_resend_is_flagged(stack_factory: Callable[..., Stack]) -> None:
    # What the settle time prevents: the lookup runs before the copy appears, the message goes twice.
    stack = stack_factory(settings={"OUTBOX_LOOKUP_SETTLE_S": "0"})
    stack.harness.apply_scenario({"exchange": {"sent_items_delay_s": 30}})
    stack.harness.set_fault(service="graph", action="drop_after_body", times=1)
    stack.enqueue(mail(id="late-2"))
    row = stack.wait_state("late-2", "sent", timeout=30)
    assert row.sent_via == "send" and row.possibly_duplicated  # the operator is told
    stack.wait_idle()
    assert len(stack.harness.deliveries(transport="graph")) == 2


def test_keyvault_down_for_a_while_is_retried_then_sent(stack: Stack) -> None:
    rule = stack.harness.set_fault(service="keyvault", action="down")
    stack.enqueue(mail(id="kv-1"))
    row = stack.wait_state("kv-1", "retrying", timeout=30)
    assert row.last_category in ("transient", "config", "unknown") and row.attempts >= 1
    stack.harness.runtime.faults.remove(rule.id)
    row = stack.wait_state("kv-1", "sent", timeout=30)
    assert row.attempts >= 2
    assert len(stack.harness.deliveries()) == 1


def test_5_mb_blob_attachment_goes_through_an_upload_session(stack: Stack) -> None:
    from azure.storage.blob import BlobServiceClient

    container = stack.values["OUTBOX_ATTACHMENTS_CONTAINER"]
    blobs = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    blobs.create_container(container)
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    blobs.get_blob_client(container, "reports/big.bin").upload_blob(payload)
    stack.enqueue(mail(id="big-1", attachments=[{"name": "big.bin", "contentType": "application/octet-stream",
                                                  "blob": f"{container}/reports/big.bin"}]))
    row = stack.wait_state("big-1", "sent", timeout=60)
    assert row.attempts == 1
    ops = [r.operation for r in stack.harness.state.requests(service="graph")]
    assert any("createUploadSession" in op for op in ops), ops
    [delivery] = stack.harness.deliveries(transport="graph")
    assert delivery.saved_to_sent_items


def test_bad_input_never_crashes_the_function(stack: Stack) -> None:
    # (Control characters cannot travel: the queue API is XML, and Azure rejects them at send time.)
    bodies = ["", " ", "null", "[]", "[1,2]", '"a string"', "{", "{}", '{"from": 5}', "\u00e9t\u00e9",
              "eyJhIjoxfQ==", "e30=", "{" * 5000 + "}" * 5000, '{"from":"a@contoso.example","to":[{"address":[]}]}',
              '{"id":"../../etc","from":"sender@contoso.example","to":["a@b.example"],"text":"x"}']
    for body in bodies:
        stack.enqueue(body)
    envs = stack.poison(count=len(bodies), timeout=30)
    assert all(isinstance(e, dict) and e["error"]["category"] == "invalid_message" for e in envs)
    # Bodies that are no JSON object keep their raw text; JSON objects (also base64 ones) are kept as objects.
    objects = {"eyJhIjoxfQ==", "e30=", "{}", '{"from": 5}'} | {b for b in bodies if b.startswith('{"')}
    raw = sorted(e["message"] for e in envs if isinstance(e["message"], str))
    assert raw == sorted(b for b in bodies if b not in objects)
    stack.wait_idle()
    _no_network_calls(stack)
    assert stack.host.stats.failed == 0


def test_a_body_near_the_queue_limit_is_poisoned_with_its_text_parked_in_blob_storage(stack: Stack) -> None:
    text = "not json " + "x" * 64_900  # fits a queue message; with the envelope around it, it would not
    stack.enqueue(text)
    [env] = stack.poison()
    assert isinstance(env, dict) and env["error"]["category"] == "invalid_message"
    assert env["message"] is None and env["messageBytes"] == len(text)
    from azure.storage.blob import BlobServiceClient

    container, name = env["messageBlob"].split("/", 1)
    blob = BlobServiceClient.from_connection_string(stack.azurite.connection_string).get_blob_client(container, name)
    assert blob.download_blob().readall().decode() == text
    assert stack.host.stats.failed == 0


def test_retry_after_pauses_that_mailbox_only(stack: Stack) -> None:
    stack.harness.set_fault(service="graph", catalog="graph.too_many_requests", retry_after=4, times=1,
                            mailbox=SENDER)
    stack.enqueue(mail(id="pause-a"))
    stack.wait_state("pause-a", "retrying")
    throttled_at = next(t for s, t in _graph_statuses(stack) if s == 429)
    stack.enqueue(mail(id="pause-b"))                       # same mailbox: waits for the pause
    stack.enqueue(mail(id="free-c", **{"from": NOREPLY}))   # another mailbox: not held up
    free = stack.wait_state("free-c", "sent")
    paused = stack.wait_state("pause-b", "sent", timeout=30)
    assert free.sent_at is not None and paused.sent_at is not None
    assert free.sent_at.timestamp() - throttled_at < 3.5
    assert paused.sent_at.timestamp() - throttled_at >= 4.0
    assert paused.attempts == 1  # waiting out another message's Retry-After is not an attempt
    stack.wait_state("pause-a", "sent", timeout=30)


ENVELOPE_KEYS = {"schema", "message", "error", "attempts", "firstSeen", "failedAt"}
ERROR_KEYS = ["category", "code", "status", "transport", "retryable", "detail", "hint", "requestId"]


def test_poison_envelopes_have_exactly_the_designed_fields(stack: Stack) -> None:
    stack.enqueue(mail(id="shape-raop", **{"from": OTHER}))   # poisoned after a send
    stack.enqueue(mail(id="shape-inv", to=["nobody"]))        # poisoned by validation
    stack.enqueue("shape: not json")                          # poisoned with its raw text
    envs = stack.poison(count=3)
    for env in envs:
        assert isinstance(env, dict) and set(env) == ENVELOPE_KEYS, env
        assert list(env["error"]) == ERROR_KEYS
        assert env["schema"] == "outbox.poison/1" and env["attempts"] == 1
        assert env["firstSeen"].endswith("Z") and env["failedAt"] >= env["firstSeen"]


def test_poison_envelope_and_retry_carry_the_producers_body_as_written(stack: Stack) -> None:
    # Fields the validator normalises for sending (domain case, IDN, name spacing, a guessed content type,
    # wrapped base64) must reach the envelope as the producer wrote them, with only the id filled in.
    body = mail(**{"from": OTHER}, to=[{"address": "Alice@Fabrikam.EXAMPLE", "name": "  Alice  "},
                                       "bob@b\u00fccher.example"],
                attachments=[{"name": "r.pdf", "contentBase64": "aGVs\nbG8="}], headers={"x-order": "1"})
    queue_id = stack.enqueue(body)
    [env] = stack.poison()
    assert isinstance(env, dict) and env["error"]["category"] == "permission"
    assert env["message"] == {**body, "id": queue_id}


def test_host_redelivery_after_a_crash_mid_send_is_not_sent_twice(stack: Stack) -> None:
    # A worker died after Graph accepted the message and before it recorded "sent": Sent Items has the
    # message, the row still says "sending" under this queue message, and the host redelivers the copy.
    from datetime import UTC, datetime, timedelta

    from azure.data.tables import UpdateMode

    from shared.message_id import make_message_id

    assert call(stack, "POST", "send?mode=now", mail(id="crash-1"))[0] == 200
    queue_message = stack.queue.send_message(json.dumps(mail(id="crash-1")), visibility_timeout=2)
    sent = stack.row("crash-1")
    assert sent is not None
    stack.status.table.upsert_entity({
        "PartitionKey": "crash-1", "RowKey": "", "State": "sending", "Attempts": 1, "FirstSeen": sent.first_seen,
        "Mailbox": SENDER, "LeaseOwner": queue_message.id, "LeaseUntil": datetime.now(UTC) + timedelta(minutes=5),
    }, mode=UpdateMode.REPLACE)
    row = stack.wait_state("crash-1", "sent", timeout=20)
    assert row.sent_via == "lookup"
    stack.wait_idle()
    [delivery] = stack.harness.deliveries()
    assert delivery.message_id == make_message_id("crash-1", SENDER)
