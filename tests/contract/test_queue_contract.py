"""design.md "Queue bodies, ids and retries": what a retry puts back, where attempts live, the settings.

The test plays the Functions host (one invocation at a time) and reads the queue and the status table
with the Azure SDKs, as an operator tool would.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

from harness.up import Harness
from tests.contract.conftest import POISON_SCHEMA, SENDER, HostPlay, mail

V1_FIELDS = {"id", "from", "to", "cc", "bcc", "replyTo", "subject", "text", "html", "attachments", "headers",
             "importance", "transport", "saveToSentItems"}


def producer_body() -> dict:
    """A v1 body in forms the contract allows but outbox would not write itself (a display name inside the
    string, an internationalised domain, upper-case enums, no contentType, wrapped base64): a retry must
    put back exactly this, with only "id" added."""
    return mail(
        to=["Ana Lima <ana@bücher.example>", {"address": "raj@fabrikam.example", "name": "Raj, Accounts"}],
        cc=["carol@fabrikam.example"],
        bcc=["archive@contoso.example"],
        replyTo=["help@contoso.example"],
        subject="Invoice 42",
        text="plain",
        html="<p>html</p>",
        attachments=[{"name": "a.txt", "contentBase64": base64.encodebytes(b"hello" * 30).decode()}],
        headers={"X-Invoice": " 42 "},
        importance="HIGH",
        transport="Graph",
        saveToSentItems=False,
    )


def test_retry_is_the_same_v1_body_with_id_filled_and_attempts_in_the_table(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=2, times=1)
    body = producer_body()
    first = play.deliver(body)
    assert first.ok, first.error
    qid = first.queue_message_id

    # Without a producer id, the queue message's own id is the message id.
    row = play.storage.row(qid)
    assert row is not None and row["State"] == "retrying" and row["Attempts"] == 1
    assert isinstance(row["FirstSeen"], datetime)

    # Invisible for the Retry-After, then the same v1 body with "id" filled, and nothing else.
    assert list(play.storage.queue.peek_messages(max_messages=32)) == []
    retry = play.storage.receive_work(timeout=5, visibility=1)
    text = retry.content
    assert text.lstrip().startswith("{"), "a retry is plain JSON (host.json messageEncoding none)"
    again = json.loads(text)
    assert set(again) <= V1_FIELDS, f"not a v1 body: {sorted(set(again) - V1_FIELDS)}"
    assert again == {**body, "id": qid}

    # The retry runs under the same id: one row, attempts 2, sent once.
    play.storage.queue.update_message(retry, visibility_timeout=0)
    second = play.invoke_next(timeout=5)
    assert second.ok, second.error
    row = play.storage.row(qid)
    assert row is not None and row["State"] == "sent" and row["Attempts"] == 2
    assert len(harness.deliveries(transport="graph")) == 1


def test_a_producer_id_is_the_message_id_across_retries(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    harness.set_fault(service="smtp", action="reply", catalog="smtp.temporary_error", params={"n": "1"}, times=1)
    first = play.deliver(mail(id="order:42@shop_x.y-z", transport="smtp"))
    assert first.ok, first.error
    assert play.storage.row(first.queue_message_id) is None
    row = play.storage.row("order:42@shop_x.y-z")
    assert row is not None and row["State"] == "retrying" and row["LastCode"] == "4.7.0"
    retry = play.storage.receive_work(timeout=5)
    assert json.loads(retry.content)["id"] == "order:42@shop_x.y-z"
    play.storage.queue.update_message(retry, visibility_timeout=0)
    assert play.invoke_next().ok
    row = play.storage.row("order:42@shop_x.y-z")
    assert row is not None and row["State"] == "sent" and row["Attempts"] == 2 and row["Transport"] == "smtp"
    [delivery] = harness.deliveries(transport="smtp")
    # The same message on every attempt: its Message-ID is the one the row records.
    assert delivery.message_id == row["InternetMessageId"]


def test_max_attempts_then_a_poison_envelope_with_the_last_error(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_MAX_ATTEMPTS="2")
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=1)
    first = play.deliver(mail(id="exhaust-1"))
    assert first.ok
    assert play.storage.row("exhaust-1")["State"] == "retrying"
    second = play.invoke_next(timeout=5)
    assert second.ok
    [text] = play.storage.take_poison(1, timeout=5)
    envelope = json.loads(text)
    assert envelope["schema"] == POISON_SCHEMA
    assert envelope["attempts"] == 2
    assert envelope["message"]["id"] == "exhaust-1" and envelope["message"]["from"] == SENDER
    error = envelope["error"]
    assert (error["category"], error["code"], error["status"], error["transport"], error["retryable"]) == (
        "transient", "serviceNotAvailable", 503, "graph", True)
    assert error["requestId"]
    row = play.storage.row("exhaust-1")
    assert row["State"] == "poisoned" and row["Attempts"] == 2 and row["LastCategory"] == "transient"
    assert error["requestId"] in row["RequestIds"].split(",")
    # firstSeen is the first attempt's time, as the table says.
    first_seen = datetime.fromisoformat(envelope["firstSeen"].replace("Z", "+00:00"))
    assert abs((first_seen - row["FirstSeen"]).total_seconds()) < 0.01
    assert list(play.storage.queue.peek_messages()) == []


def _retry_delay_s(play: HostPlay, message_id: str) -> float:
    row = play.storage.row(message_id)
    assert row is not None and row["State"] == "retrying", row
    return (row["NextAttemptAt"] - row["UpdatedAt"]).total_seconds()


def test_backoff_settings_set_the_retry_delay(harness: Harness, host_play) -> None:
    # ErrorMailboxStoreUnavailable carries no Retry-After: the delay comes from the backoff settings.
    play: HostPlay = host_play(OUTBOX_BACKOFF_BASE_S="3", OUTBOX_BACKOFF_MAX_S="3")
    harness.set_fault(service="graph", action="reply", catalog="graph.store_unavailable", times=1)
    assert play.deliver(mail(id="backoff-1")).ok
    delay = _retry_delay_s(play, "backoff-1")
    assert 1.4 <= delay <= 3.1, delay  # equal jitter: within [base/2, base]
    assert list(play.storage.queue.peek_messages()) == [], "the retry must be invisible for its delay"
    started = time.monotonic()
    play.storage.receive_work(timeout=8)
    assert time.monotonic() - started <= 5.0


def test_backoff_max_caps_the_delay(harness: Harness, host_play) -> None:
    play: HostPlay = host_play(OUTBOX_BACKOFF_BASE_S="600", OUTBOX_BACKOFF_MAX_S="1")
    harness.set_fault(service="graph", action="reply", catalog="graph.store_unavailable", times=1)
    assert play.deliver(mail(id="backoff-2")).ok
    assert _retry_delay_s(play, "backoff-2") <= 1.1
    play.storage.receive_work(timeout=3)


def test_host_json_and_the_trigger_binding_are_part_of_the_contract() -> None:
    """design.md: host.json sets messageEncoding none (producers may send plain JSON), and the trigger binds
    %OUTBOX_QUEUE% on the AzureWebJobsStorage connection; the worker indexes the app (main.py)."""
    from harness.localhost import index_app, indexed_functions
    from tests.contract.conftest import ROOT

    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["extensions"]["queues"]["messageEncoding"] == "none"
    app = index_app(ROOT, {"PYTHON_SCRIPT_FILE_NAME": "main.py"})
    [queue_fn] = [f for f in indexed_functions(app) if f.trigger.type.lower() == "queuetrigger"]
    assert queue_fn.trigger.raw["queueName"] == "%OUTBOX_QUEUE%"
    assert queue_fn.trigger.raw.get("connection") == "AzureWebJobsStorage"
    example = json.loads((ROOT / "local.settings.example.json").read_text(encoding="utf-8"))["Values"]
    assert example["OUTBOX_QUEUE"] == "outbox" and example["PYTHON_SCRIPT_FILE_NAME"] == "main.py"
