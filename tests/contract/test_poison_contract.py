"""design.md "Poison envelope": what an independent operator tool reads from ``<queue>-poison``.

Exact keys and types, the original message (or its raw text), an oversized original parked in the
attachment container with a reference, and the host's own copies without ``schema``.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from harness.azurite import Azurite
from harness.up import Harness
from tests.contract.conftest import (
    CATEGORIES,
    ENVELOPE_KEYS,
    ERROR_KEYS,
    PARKED_KEYS,
    POISON_SCHEMA,
    SENDER,
    HostPlay,
    mail,
)

OUTSIDE_POLICY = "other@contoso.example"  # allowed sender, but outside the app's Graph access policy


def parse_iso(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.tzinfo is not None, f"{text!r} has no time zone"
    return value


def test_permanent_failure_envelope_keys_types_and_row(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    body = mail(id="perm-1", **{"from": OUTSIDE_POLICY})
    assert play.deliver(body).ok
    [text] = play.storage.take_poison(1, timeout=5)
    envelope = json.loads(text)
    assert envelope["schema"] == POISON_SCHEMA
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["message"] == {**body, "id": "perm-1"}
    error = envelope["error"]
    assert set(error) == ERROR_KEYS
    assert (error["category"], error["code"], error["status"], error["transport"], error["retryable"]) == (
        "permission", "ErrorAccessDenied", 403, "graph", False)
    assert "RAOP" in error["detail"] and error["hint"]
    assert isinstance(error["requestId"], str) and error["requestId"]
    assert envelope["attempts"] == 1 and type(envelope["attempts"]) is int
    assert parse_iso(envelope["firstSeen"]) <= parse_iso(envelope["failedAt"])
    row = play.storage.row("perm-1")
    assert row is not None
    assert (row["State"], row["Attempts"], row["LastCategory"], row["LastCode"], row["LastStatus"]) == (
        "poisoned", 1, "permission", "ErrorAccessDenied", 403)
    assert row["Transport"] == "graph" and row["LastHint"] == error["hint"]
    assert error["requestId"] in row["RequestIds"].split(",")
    assert harness.deliveries() == []


def test_oversized_envelope_parks_the_original_in_the_attachment_container(harness: Harness, host_play) -> None:
    play: HostPlay = host_play()
    body = mail(id="big-1", **{"from": OUTSIDE_POLICY}, html="<p>" + "a" * 65_200 + "</p>")
    text = json.dumps(body)
    assert len(text.encode()) < 64 * 1024  # the producer's message fits a queue message
    assert play.deliver(text).ok
    [raw] = play.storage.take_poison(1, timeout=5)
    assert len(raw.encode()) <= 64 * 1024
    envelope = json.loads(raw)
    assert envelope["schema"] == POISON_SCHEMA and envelope["error"]["category"] == "permission"
    assert set(envelope) == ENVELOPE_KEYS | PARKED_KEYS and envelope["id"] == "big-1"
    assert envelope["message"] is None
    container, _, path = envelope["messageBlob"].partition("/")
    assert container == play.values["OUTBOX_ATTACHMENTS_CONTAINER"]
    original = play.storage.blobs.get_blob_client(container, path).download_blob().readall()
    assert json.loads(original) == {**body, "id": "big-1"}
    assert envelope["messageBytes"] == len(original)


def test_error_categories_are_the_designs(harness: Harness, host_play) -> None:
    """One envelope per kind of failure an operator sees most: each category is from design.md's list."""
    play: HostPlay = host_play(OUTBOX_MAX_AGE_S="0")  # throttling spends no attempt: only age poisons it
    harness.set_fault(service="graph", action="reply", catalog="graph.mailbox_concurrency", retry_after=1,
                      mailbox=SENDER)
    assert play.deliver(mail(id="cat-throttled")).ok
    assert play.deliver(mail(id="cat-recipient", transport="smtp")).ok  # fine
    assert play.deliver("not json at all").ok
    envelopes = [json.loads(t) for t in play.storage.take_poison(2, timeout=5)]
    for envelope in envelopes:
        assert envelope["error"]["category"] in CATEGORIES
    assert {e["error"]["category"] for e in envelopes} == {"throttled", "invalid_message"}


def test_a_base64_producer_message_whose_retry_would_not_fit_as_plain_json_is_still_retried(
    harness: Harness, host_play, azurite: Azurite
) -> None:
    """A producer may use base64 (design: both encodings work). Markup grows when the queue service
    XML-escapes plain text, so the retry must still be written (e.g. as base64, which does not grow)."""
    play: HostPlay = host_play()
    body = mail(id="b64-markup", html="<i>" * 15_000)
    text = json.dumps(body)
    assert len(base64.b64encode(text.encode())) < 64 * 1024
    producer = QueueClient.from_connection_string(azurite.connection_string, play.values["OUTBOX_QUEUE"],
                                                  message_encode_policy=TextBase64EncodePolicy())
    producer.send_message(text)
    producer.close()
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=1, times=1)
    first = play.invoke_next()
    assert first.ok, f"the retry could not be written: {first.error!r}"
    assert play.storage.row("b64-markup")["State"] == "retrying"
    retry = play.storage.receive_work(timeout=5)
    play.storage.queue.update_message(retry, visibility_timeout=0)
    assert play.invoke_next().ok
    assert play.storage.row("b64-markup")["State"] == "sent"


def test_host_moved_message_has_no_schema_and_is_byte_for_byte_the_original(local_stack) -> None:
    """The function cannot start (a broken setting): it raises, and after maxDequeueCount the host moves
    the producer's text as it is. An operator tells it apart by the missing "schema"."""
    stack = local_stack(OUTBOX_MAX_ATTEMPTS="many", host={"max_dequeue_count": 2, "visibility_timeout_s": 0.0})
    text = json.dumps(mail(id="host-moved-1"))
    stack.storage.send(text)
    [raw] = stack.take_poison(1, timeout=20)
    assert raw == text
    assert "schema" not in json.loads(raw)
    assert stack.host.stats.moved_to_poison == 1


def test_the_envelope_keeps_the_original_message_as_the_producer_wrote_it(harness: Harness, host_play) -> None:
    """design.md: "message": the original message. Forms the contract allows (a display name in the string,
    no contentType, upper-case importance, an internationalised domain) are kept as written."""
    play: HostPlay = host_play()
    body = mail(id="orig-1", **{"from": OUTSIDE_POLICY}, to=["Ana Lima <ana@bücher.example>"], importance="HIGH",
                attachments=[{"name": "a.txt", "contentBase64": "aGVs\nbG8="}])
    assert play.deliver(body).ok
    [text] = play.storage.take_poison(1, timeout=5)
    assert json.loads(text)["message"] == {**body, "id": "orig-1"}


def test_key_vault_refusals_are_classified_with_their_status(harness: Harness, host_play) -> None:
    """The function's identity may not read the certificate (403), or the name is wrong (404)."""
    harness.apply_scenario({"managed_identity": {"keyvault_role": "none"}})
    play: HostPlay = host_play()
    assert play.deliver(mail(id="kv-403")).ok
    [text] = play.storage.take_poison(1, timeout=5)
    error = json.loads(text)["error"]
    assert (error["category"], error["status"], error["transport"]) == ("permission", 403, "keyvault"), error
    assert error["retryable"] is False and error["hint"]

    harness.apply_scenario({"managed_identity": {"keyvault_role": "Key Vault Secrets User"}})
    play = host_play(OUTBOX_CERT_NAME="no-such-certificate")
    assert play.deliver(mail(id="kv-404")).ok
    [text] = play.storage.take_poison(1, timeout=5)
    error = json.loads(text)["error"]
    assert (error["category"], error["status"], error["transport"], error["code"]) == (
        "config", 404, "keyvault", "SecretNotFound"), error
