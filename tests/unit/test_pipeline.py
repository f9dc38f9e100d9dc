"""The pipeline's decisions, over real storage (Azurite) with a scripted transport.

Each test gets its own queue, poison queue and status table, so tests share one Azurite and stay fast.
"""

from __future__ import annotations

import base64
import json
import logging
import random
from typing import Any

import pytest

from harness.azurite import Azurite
from shared.errors import OutboxError
from shared.message_id import make_message_id
from shared.pipeline import Pipeline
from shared.settings import load_settings
from shared.storage import build_stores
from shared.storage.queues import encode_body
from tests.unit.test_pipeline_support import (
    SENDER,
    ScriptedSenders,
    drain,
    iter_logs,
    message,
    poison_envelopes,
    unique,
)


@pytest.fixture
def storage(azurite: Azurite) -> str:
    return azurite.connection_string


class World:
    def __init__(self, conn: str, **overrides: str) -> None:
        self.queue = unique("q")
        env = {
            "AzureWebJobsStorage": conn,
            "OUTBOX_QUEUE": self.queue,
            "OUTBOX_STATUS_TABLE": unique("t"),
            "OUTBOX_ATTACHMENTS_CONTAINER": unique("c"),
            "OUTBOX_ALLOWED_SENDERS": "*@contoso.example",
            "OUTBOX_MAX_ATTEMPTS": "3",
            "OUTBOX_BACKOFF_BASE_S": "0",
            "OUTBOX_BACKOFF_MAX_S": "0",
            "OUTBOX_RETRY_AFTER_MAX_S": "30",
            "OUTBOX_LEASE_S": "60",
            "OUTBOX_LOOKUP_SETTLE_S": "0",
            **overrides,
        }
        self.settings = load_settings(env)
        self.senders = ScriptedSenders()
        self.stores = build_stores(self.settings)
        self.status, self.queues = self.stores.status, self.stores.queues
        self.pipeline = Pipeline(self.settings, self.senders, self.status, self.queues, self.stores.blobs,
                                 rng=random.Random(7))
        qs = self.settings.storage.queue_service_client()
        self.work_q = qs.get_queue_client(self.settings.queue)
        self.poison_q = qs.get_queue_client(self.settings.poison_queue)
        self.work_q.create_queue()

    def handle(self, body: Any, qid: str = "q-1", dequeue_count: int = 1) -> Any:
        raw = body if isinstance(body, str | bytes) else encode_body(body)
        return self.pipeline.handle_queue_message(raw, queue_message_id=qid, dequeue_count=dequeue_count)

    def requeued(self, wait_s: float = 0.0) -> list[dict[str, Any]]:
        return [json.loads(m.content) for m in drain(self.work_q, wait_s=wait_s)]

    def poisoned(self) -> list[dict[str, Any]]:
        self.queues.ensure_queue(self.settings.poison_queue)
        return poison_envelopes(self.poison_q)


@pytest.fixture
def world(storage: str) -> World:
    return World(storage)


def test_happy_path_marks_sent_and_logs_one_event(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="outbox")
    out = world.handle(message(id="m-1"))
    assert out.kind == "sent" and out.attempt == 1
    row = world.status.get("m-1")
    assert row is not None and row.state == "sent" and row.transport == "graph"
    assert row.request_ids == ("req-1", "creq-1")
    assert row.internet_message_id == make_message_id("m-1", SENDER)
    assert world.senders.graph.sent[0][1] == make_message_id("m-1", SENDER)
    events = list(iter_logs(caplog.records))
    assert len(events) == 1
    assert events[0]["outcome"] == "sent" and events[0]["messageId"] == "m-1" and events[0]["mailbox"] == SENDER
    assert events[0]["requestIds"] == ["req-1", "creq-1"] and events[0]["durationMs"] >= 0
    assert world.requeued() == [] and world.poisoned() == []


def test_message_without_id_takes_the_queue_message_id(world: World) -> None:
    out = world.handle(message(), qid="0f8fad5b-d9cb-469f-a165-70867728950e")
    assert out.kind == "sent" and out.message_id == "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_base64_body_is_accepted(world: World) -> None:
    out = world.handle(encode_body(message(id="b64"), base64_encode=True))
    assert out.kind == "sent"


def test_smtp_transport_chosen_by_the_message(world: World) -> None:
    out = world.handle(message(id="s-1", transport="smtp"))
    assert out.kind == "sent" and out.transport == "smtp"
    assert len(world.senders.smtp.sent) == 1 and world.senders.graph.sent == []


def test_non_json_is_poisoned_with_its_raw_text_and_no_send(world: World) -> None:
    out = world.handle("hello, not json", qid="raw-1")
    assert out.kind == "poisoned" and out.category == "invalid_message"
    [env] = world.poisoned()
    assert env["schema"] == "outbox.poison/1" and env["message"] == "hello, not json"
    assert env["error"]["category"] == "invalid_message" and env["attempts"] == 1
    assert "hello, not json" not in env["error"]["detail"]  # body text stays out of the error fields
    assert world.senders.graph.sent == [] and world.senders.graph.lookups == []
    row = world.status.get("raw-1")
    assert row is not None and row.state == "poisoned" and row.last_category == "invalid_message"


def test_invalid_message_poisoned_at_first_attempt_with_field_paths(world: World) -> None:
    out = world.handle(message(id="bad-1", to=["not an address"]))
    assert out.kind == "poisoned" and out.attempt == 1
    [env] = world.poisoned()
    assert env["message"]["id"] == "bad-1" and "to[0]" in env["error"]["detail"]
    assert world.senders.graph.sent == []


def test_sender_outside_the_allow_list_is_invalid(world: World) -> None:
    out = world.handle(message(id="who", **{"from": "ceo@elsewhere.example"}))
    assert out.kind == "poisoned" and out.category == "invalid_message"
    assert world.senders.graph.sent == []


def test_an_invalid_copy_does_not_block_a_corrected_one(world: World) -> None:
    assert world.handle(message(id="fix-1", to=[])).kind == "poisoned"
    assert world.handle(message(id="fix-1")).kind == "sent"


def test_transient_error_requeues_the_body_then_sends(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("transient", "serviceNotAvailable", status=503, retryable=True,
                                                   transport="graph", request_id="r503")]
    out = world.handle(message(id="t-1"))
    assert out.kind == "retry" and out.state == "retrying" and out.attempt == 1
    row = world.status.get("t-1")
    assert row is not None and row.state == "retrying" and row.last_code == "serviceNotAvailable"
    [body] = world.requeued()
    assert body["id"] == "t-1" and body["subject"] == "Hello"
    out2 = world.handle(body, qid="q-2")
    assert out2.kind == "sent" and out2.attempt == 2
    assert world.status.get("t-1").state == "sent"


def test_retry_after_sets_the_delay_and_the_message_stays_hidden(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("throttled", "ApplicationThrottled", status=429, retryable=True,
                                                   transport="graph", retry_after=3)]
    out = world.handle(message(id="ra-1"))
    # Throttling is not the message's fault: deferred after Retry-After, no attempt spent.
    assert out.kind == "deferred" and out.delay_s == 3 and out.attempt == 0
    row = world.status.get("ra-1")
    assert row is not None and row.attempts == 0 and row.throttled == 1 and row.last_code == "ApplicationThrottled"
    assert world.requeued() == []  # invisible for now (3 s leaves room for a loaded machine)
    assert [b["id"] for b in world.requeued(wait_s=8)] == ["ra-1"]


def test_a_429_storm_longer_than_max_attempts_still_delivers(world: World) -> None:
    storm = [OutboxError("throttled", "ApplicationThrottled", status=429, retryable=True, transport="graph",
                         retry_after=0) for _ in range(7)]  # OUTBOX_MAX_ATTEMPTS is 3 in this world
    world.senders.graph.send_script = list(storm)
    body: Any = message(id="storm-1")
    for n in range(7):
        out = world.handle(body, qid=f"q-{n}")
        assert out.kind == "deferred" and out.attempt == 0, (n, out)
        [body] = world.requeued(wait_s=2)
    assert world.handle(body, qid="q-last").kind == "sent"
    row = world.status.get("storm-1")
    assert row is not None and row.state == "sent" and row.attempts == 1 and row.throttled == 7
    assert world.poisoned() == []


def test_a_throttled_message_past_the_age_limit_is_poisoned_throttled_with_its_count(storage: str) -> None:
    w = World(storage, OUTBOX_MAX_AGE_S="60")
    from datetime import timedelta

    later = [w.pipeline.clock()]
    w.pipeline.clock = lambda: later[0]
    w.senders.graph.send_script = [OutboxError("throttled", "ApplicationThrottled", status=429, retryable=True,
                                               transport="graph", retry_after=0) for _ in range(3)]
    body: Any = message(id="old-1")
    for n in range(2):
        assert w.handle(body, qid=f"q-{n}").kind == "deferred"
        [body] = w.requeued(wait_s=2)
    later[0] = later[0] + timedelta(seconds=61)
    out = w.handle(body, qid="q-old")
    assert out.kind == "poisoned" and out.category == "throttled" and out.attempt == 0
    [envelope] = w.poisoned()
    assert envelope["error"]["category"] == "throttled" and envelope["error"]["retryable"] is False
    assert "throttled 3 times" in envelope["error"]["detail"] and "OUTBOX_MAX_AGE_S" in envelope["error"]["detail"]
    row = w.status.get("old-1")
    assert row is not None and row.state == "poisoned" and row.throttled == 3


def test_retry_after_is_capped(storage: str) -> None:
    w = World(storage, OUTBOX_RETRY_AFTER_MAX_S="1")
    w.senders.graph.send_script = [OutboxError("throttled", "x", retryable=True, retry_after=86400)]
    assert w.handle(message(id="cap")).delay_s == 1


def test_attempts_exhausted_poisons_with_the_last_error(world: World) -> None:
    err = OutboxError("transient", "ErrorServerBusy", status=503, retryable=True, transport="graph")
    world.senders.graph.send_script = [err, err, err]
    body: Any = message(id="ex-1")
    kinds = []
    for n in range(3):
        out = world.handle(body, qid=f"q-{n}")
        kinds.append(out.kind)
        if out.kind == "retry":
            [body] = world.requeued()
    assert kinds == ["retry", "retry", "poisoned"]
    [env] = world.poisoned()
    assert env["attempts"] == 3 and env["error"]["code"] == "ErrorServerBusy" and env["message"]["id"] == "ex-1"
    row = world.status.get("ex-1")
    assert row is not None and row.state == "poisoned" and row.attempts == 3


def test_permanent_error_poisons_at_once(world: World) -> None:
    world.senders.graph.send_script = [OutboxError(
        "permission", "ErrorAccessDenied", status=403, transport="graph",
        hint="add the mailbox to the policy scope", request_id="rid-403")]
    out = world.handle(message(id="p-1"))
    assert out.kind == "poisoned"
    [env] = world.poisoned()
    assert env["error"] == {"category": "permission", "code": "ErrorAccessDenied", "status": 403,
                            "transport": "graph", "retryable": False, "detail": "",
                            "hint": "add the mailbox to the policy scope", "requestId": "rid-403"}
    row = world.status.get("p-1")
    assert row is not None and row.last_hint == "add the mailbox to the policy scope"


def test_fresh_token_retry_spent_in_the_transport_is_not_repeated(world: World) -> None:
    # 535 5.7.3: the SMTP transport already retried once with a fresh token before raising this.
    world.senders.smtp.send_script = [OutboxError("auth", "5.7.3", status=535, transport="smtp", retryable=True,
                                                  max_retries=1, refresh_credentials=True)]
    out = world.handle(message(id="a-1", transport="smtp"))
    assert out.kind == "poisoned" and out.category == "auth"
    assert len(world.poisoned()) == 1


def test_error_allowing_more_retries_gets_them(world: World) -> None:
    err = OutboxError("transient", "4.2.0", status=430, transport="smtp", retryable=True, max_retries=1)
    world.senders.smtp.send_script = [err, err]
    first = world.handle(message(id="lf", transport="smtp"))
    [body] = world.requeued()
    second = world.handle(body, qid="q-2")
    assert (first.kind, second.kind) == ("retry", "poisoned")


def test_paused_mailbox_defers_without_counting_an_attempt(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("throttled", "outbox.paused", retryable=True, retry_after=1.0)]
    out = world.handle(message(id="pz"))
    assert out.kind == "deferred" and out.delay_s == 1
    row = world.status.get("pz")
    assert row is not None and row.attempts == 0 and row.state == "queued"
    [body] = world.requeued(wait_s=5)
    assert world.handle(body, qid="q-2").attempt == 1


def test_same_id_twice_is_sent_once(world: World) -> None:
    assert world.handle(message(id="dup"), qid="a").kind == "sent"
    second = world.handle(message(id="dup"), qid="b")
    assert second.kind == "duplicate" and second.state == "sent"
    assert len(world.senders.graph.sent) == 1


def test_copy_finding_a_live_claim_waits_for_the_lease(world: World) -> None:
    world.status.claim("busy", owner="other-queue-message", lease_s=2, transport="graph", mailbox=SENDER)
    out = world.handle(message(id="busy"), qid="mine")
    assert out.kind == "deferred" and 2 <= out.delay_s <= 3.5
    assert world.senders.graph.sent == []
    assert world.requeued() == []  # hidden until the lease ends
    [body] = world.requeued(wait_s=6)
    assert body["id"] == "busy"


def test_redelivery_after_a_crash_looks_in_sent_items_first(world: World) -> None:
    world.status.claim("crash", owner="q-crash", lease_s=60, transport="graph", mailbox=SENDER)
    world.senders.graph.find_script = [True]
    out = world.handle(message(id="crash"), qid="q-crash", dequeue_count=2)
    assert out.kind == "sent" and out.sent_via == "lookup"
    assert world.senders.graph.sent == [] and world.senders.graph.lookups == [make_message_id("crash", SENDER)]
    row = world.status.get("crash")
    assert row is not None and row.state == "sent" and row.sent_via == "lookup"


def test_expired_lease_lookup_not_found_sends(world: World) -> None:
    world.status.claim("exp", owner="someone", lease_s=0.001, transport="graph", mailbox=SENDER)
    world.senders.graph.find_script = [False]
    out = world.handle(message(id="exp"), qid="new")
    # A miss proves nothing (Sent Items lags): the resend is flagged as possibly duplicated.
    assert out.kind == "sent" and out.possibly_duplicated and len(world.senders.graph.sent) == 1


def test_lookup_impossible_resends_marked_possibly_duplicated(world: World) -> None:
    world.status.claim("smtp-crash", owner="q9", lease_s=60, transport="smtp", mailbox=SENDER)
    world.senders.smtp.find_script = [None]
    out = world.handle(message(id="smtp-crash", transport="smtp"), qid="q9")
    assert out.kind == "sent" and out.possibly_duplicated
    row = world.status.get("smtp-crash")
    assert row is not None and row.possibly_duplicated


def test_ambiguous_send_is_not_resent_in_the_same_invocation(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("transient", "gatewayTimeout", status=504, transport="graph",
                                                   retryable=True, request_sent=True, maybe_delivered=True)]
    world.senders.graph.find_script = [True]
    out = world.handle(message(id="amb"))
    assert out.kind == "retry" and out.ambiguous and out.state == "ambiguous"
    assert len(world.senders.graph.sent) == 1
    assert world.status.get("amb").state == "ambiguous"
    [body] = world.requeued()
    out2 = world.handle(body, qid="q-2")
    assert out2.kind == "sent" and out2.sent_via == "lookup"
    assert len(world.senders.graph.sent) == 1  # never sent twice


def test_ambiguous_with_policy_poison_goes_to_an_operator(storage: str) -> None:
    w = World(storage, OUTBOX_ON_AMBIGUOUS="poison")
    w.senders.graph.send_script = [OutboxError("transient", "gatewayTimeout", status=504, transport="graph",
                                               retryable=True, maybe_delivered=True)]
    assert w.handle(message(id="ap")).kind == "poisoned"
    [env] = w.poisoned()
    assert env["error"]["code"] == "gatewayTimeout"


def test_ambiguous_with_policy_resend_sends_again_marked(storage: str) -> None:
    w = World(storage, OUTBOX_ON_AMBIGUOUS="resend")
    w.senders.graph.send_script = [OutboxError("transient", "gatewayTimeout", status=504, transport="graph",
                                               retryable=True, maybe_delivered=True)]
    w.handle(message(id="ar"))
    [body] = w.requeued()
    out = w.handle(body, qid="q-2")
    assert out.kind == "sent" and out.possibly_duplicated and w.senders.graph.lookups == []


def test_unexpected_transport_exception_is_treated_as_ambiguous(world: World) -> None:
    world.senders.graph.send_script = [RuntimeError("boom")]
    out = world.handle(message(id="bug"))
    assert out.kind == "retry" and out.ambiguous and out.code == "outbox.unexpected"


def test_oversized_poison_envelope_parks_the_original_in_blob_storage(world: World) -> None:
    big = "x" * 60_000
    world.senders.graph.send_script = [OutboxError("size", "ErrorMessageSizeExceeded", status=413)]
    body = message(id="big", html="<p>" + big + "</p>", text="<&>" * 2000)
    out = world.handle(body)
    assert out.kind == "poisoned"
    [env] = world.poisoned()
    assert env["message"] is None and env["messageBlob"].startswith(world.settings.attachments_container + "/")
    assert set(env) == {"schema", "message", "error", "attempts", "firstSeen", "failedAt", "messageBlob",
                        "messageBytes", "id"} and env["id"] == "big"
    container, name = env["messageBlob"].split("/", 1)
    blob = world.settings.storage.blob_service_client().get_blob_client(container, name)
    stored = json.loads(blob.download_blob().readall())
    assert stored["id"] == "big" and big in stored["html"]


def test_failed_poison_write_raises_so_the_host_redelivers(world: World) -> None:
    class BrokenQueues:
        def poison(self, envelope: Any, **where: Any) -> str:
            raise ConnectionError("storage down")

    world.pipeline.queues = BrokenQueues()
    with pytest.raises(ConnectionError):
        world.handle("not json")


def test_missing_queues_and_table_are_created(storage: str) -> None:
    w = World(storage)
    w.work_q.delete_queue()
    w.senders.graph.send_script = [OutboxError("transient", "x", retryable=True)]
    assert w.handle(message(id="mk")).kind == "retry"
    assert [b["id"] for b in w.requeued()] == ["mk"]


def test_secrets_in_server_text_never_reach_logs_or_envelopes(world: World, caplog: pytest.LogCaptureFixture) -> None:
    jwt = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2dyYXBoIn0.c2lnbmF0dXJlc2lnbmF0dXJl"
    xoauth = base64.b64encode(f"user={SENDER}\x01auth=Bearer {jwt}\x01\x01".encode()).decode()
    world.senders.smtp.send_script = [OutboxError(
        "auth", "5.7.3", status=535, transport="smtp",
        detail=f"535 5.7.3 Authentication unsuccessful; sent AUTH XOAUTH2 {xoauth} with Bearer {jwt}")]
    caplog.set_level(logging.DEBUG)
    world.handle(message(id="sec", transport="smtp", text="TOP-SECRET-BODY-TEXT"))
    [env] = world.poisoned()
    text = caplog.text + json.dumps(env["error"])
    for secret in (jwt, xoauth, "TOP-SECRET-BODY-TEXT"):
        assert secret not in text


def test_send_now_answers_instead_of_queueing(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("throttled", "ApplicationThrottled", status=429,
                                                   retryable=True, retry_after=7)]
    out = world.pipeline.send_now(message(id="now-1"))
    assert out.kind == "retry" and out.delay_s == 7
    assert world.requeued() == []
    out2 = world.pipeline.send_now(message(id="now-1"))
    assert out2.kind == "sent" and out2.attempt == 1  # the 429 spent no attempt


def test_send_now_permanent_error_is_answered_not_poisoned(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("recipient", "ErrorInvalidRecipients", status=400)]
    out = world.pipeline.send_now(message(id="now-2"))
    assert out.kind == "failed" and out.state == "failed"
    assert world.poisoned() == []
    assert world.status.get("now-2").state == "failed"


def test_enqueue_validates_fills_the_id_and_records_queued(world: World) -> None:
    done = world.pipeline.enqueue(message())
    message_id, row = done.message_id, done.row
    assert row.state == "queued" and row.attempts == 0 and not done.duplicate
    [body] = world.requeued()
    assert body["id"] == message_id
    assert world.handle(body, qid="whatever").kind == "sent"
    assert world.status.get(message_id).attempts == 1


def test_retry_puts_back_the_producers_body_with_only_the_id_filled(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("transient", "serviceNotAvailable", status=503, retryable=True)]
    body = message(to=[{"address": "Alice@Fabrikam.EXAMPLE", "name": "  Alice  "}, "bob@b\u00fccher.example"],
                   attachments=[{"name": "r.pdf", "contentBase64": "aGVs\nbG8="}], importance="high")
    assert world.handle(body, qid="q-orig").kind == "retry"
    [requeued] = world.requeued()
    assert requeued == {**body, "id": "q-orig"}
    assert "attempts" not in requeued and "firstSeen" not in requeued  # those live in the status table
    assert world.handle(requeued, qid="q-next").kind == "sent"


def test_a_base64_body_goes_back_as_plain_json_of_the_same_object(world: World) -> None:
    world.senders.graph.send_script = [OutboxError("transient", "serviceNotAvailable", status=503, retryable=True)]
    body = message(id="b64-retry", to=["Bob@Fabrikam.EXAMPLE"])
    assert world.handle(encode_body(body, base64_encode=True)).kind == "retry"
    [requeued] = world.requeued()
    assert requeued == body


def test_failed_status_write_for_an_invalid_message_raises_so_the_host_redelivers(world: World) -> None:
    class BrokenTable:
        def record_invalid(self, message_id: str, **fields: Any) -> bool:
            raise ConnectionError("table storage down")

    world.pipeline.status = BrokenTable()
    with pytest.raises(ConnectionError):
        world.handle("not json", qid="inv-redeliver")
    # Nothing reached the poison queue, so the redelivery leaves exactly one envelope.
    assert world.poisoned() == []
    world.pipeline.status = world.status
    assert world.handle("not json", qid="inv-redeliver").kind == "poisoned"
    assert len(world.poisoned()) == 1 and world.status.get("inv-redeliver").state == "poisoned"


def test_send_now_repeated_with_the_same_client_request_id_does_not_send_twice(world: World) -> None:
    # An HTTP client's retry (azure-core keeps x-ms-client-request-id across retries) arrives while the
    # first call is still sending: it must wait, not take the first call's claim for its own.
    first = world.status.claim("now-dup", owner="http:abc", lease_s=60, transport="graph", mailbox=SENDER)
    assert first.kind.value == "claimed"
    again = world.pipeline.send_now(message(id="now-dup"), request_id="abc")
    assert again.kind == "in_flight" and world.senders.graph.sent == [] and world.senders.graph.lookups == []


def test_send_now_logs_the_callers_client_request_id(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="outbox")
    assert world.pipeline.send_now(message(id="now-log"), request_id="trace-77").kind == "sent"
    [event] = iter_logs(caplog.records)
    assert event["mode"] == "now" and event["clientRequestId"] == "trace-77"


def test_a_retry_that_only_fits_as_base64_goes_back_as_base64(world: World) -> None:
    # HTML is mostly '<' and '>', which the queue's XML wire format escapes to four bytes each: the
    # producer's base64 fits in 64 KiB, the same object as plain JSON would not.
    world.senders.graph.send_script = [OutboxError("transient", "serviceNotAvailable", status=503, retryable=True)]
    body = message(id="html-heavy", html="<b></b>" * 4000)
    assert world.handle(encode_body(body, base64_encode=True)).kind == "retry"
    [raw] = drain(world.work_q)
    assert not raw.content.startswith("{")
    assert json.loads(base64.b64decode(raw.content)) == body


def test_an_error_whose_catalog_retries_are_spent_is_poisoned_as_not_retryable(world: World) -> None:
    # 535 5.7.3 after the transport's fresh-token retry: requeueing it unchanged cannot succeed, so the
    # envelope must not tell an operator's tool that it can. Attempts exhausted by OUTBOX_MAX_ATTEMPTS can.
    world.senders.smtp.send_script = [OutboxError("auth", "5.7.3", status=535, transport="smtp", retryable=True,
                                                  max_retries=1, refresh_credentials=True)]
    assert world.handle(message(id="spent", transport="smtp")).kind == "poisoned"
    [env] = world.poisoned()
    assert env["error"]["retryable"] is False and env["error"]["code"] == "5.7.3"
    busy = OutboxError("transient", "ErrorServerBusy", status=503, retryable=True)
    world.senders.graph.send_script = [busy, busy, busy]
    body: Any = message(id="budget")
    for n in range(3):
        if world.handle(body, qid=f"b-{n}").kind == "retry":
            [body] = world.requeued()
    [env] = world.poisoned()
    assert env["error"]["retryable"] is True and env["attempts"] == 3


def test_an_ambiguous_send_is_not_looked_up_before_the_settle_time(storage: str) -> None:
    w = World(storage, OUTBOX_LOOKUP_SETTLE_S="30")
    w.senders.graph.send_script = [OutboxError("transient", "gatewayTimeout", status=504, retryable=True,
                                               request_sent=True, maybe_delivered=True, transport="graph")]
    body: Any = message(id="settle-1")
    first = w.handle(body, qid="q-1")
    assert first.kind == "retry" and first.ambiguous and first.delay_s is not None and first.delay_s >= 30
    # A copy that comes back early (another queue message, an operator's requeue) neither looks nor sends.
    early = w.handle(body, qid="q-2")
    assert early.kind == "deferred" and early.code == "outbox.lookup_settling" and early.attempt == 1
    assert w.senders.graph.lookups == [] and len(w.senders.graph.sent) == 1
    row = w.status.get("settle-1")
    assert row is not None and row.state == "ambiguous" and row.attempts == 1
