"""An independent producer against the local Functions host: message v1 (design.md), both encodings.

One batch is produced for the whole module (valid messages with every field, in plain JSON and in
base64 as azure-storage-queue's TextBase64EncodePolicy writes it, and a catalogue of invalid bodies),
the local host runs the real function app over it, and each test then checks one case against what an
outsider can see: what the fake Graph and Exchange received, the poison queue, the status table.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import pytest

from harness.azurite import Azurite
from harness.state import Delivery
from harness.up import Harness
from tests.contract.conftest import (
    CATEGORIES,
    ENVELOPE_KEYS,
    ERROR_KEYS,
    NOREPLY,
    POISON_SCHEMA,
    ROOT,
    SENDER,
    Storage,
    contract_values,
    mail,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()
PDF = base64.b64encode(b"%PDF-1.7\n" + b"x" * 300).decode()
BLOB_BYTES = bytes(range(256)) * 400  # 100 KiB: more than a queue message can hold


def full(id: str, **more: Any) -> dict[str, Any]:
    """Every v1 field."""
    body = {
        "id": id,
        "from": {"address": SENDER, "name": "Contoso Billing"},
        "to": ["ana@fabrikam.example", {"address": "raj@fabrikam.example", "name": "Raj, Accounts"}],
        "cc": ["\"Doe, John\" <john@fabrikam.example>"],
        "bcc": ["archive@contoso.example"],
        "replyTo": ["billing-help@contoso.example"],
        "subject": f"Invoice {id}",
        "text": "Your invoice is attached.",
        "html": "<p>Your invoice is attached.</p><img src=\"cid:logo\">",
        "attachments": [
            {"name": "logo.png", "contentBase64": PNG, "inline": True, "contentId": "logo"},
            {"name": "invoice.pdf", "contentType": "application/pdf", "contentBase64": PDF},
        ],
        "headers": {"X-Invoice": "2026-0042"},
        "importance": "high",
        "saveToSentItems": False,
    }
    body.update(more)
    return body


# id -> (body, base64?) for messages that must be sent.
VALID: dict[str, tuple[dict[str, Any], bool]] = {
    "full-graph-plain": (full("full-graph-plain", transport="graph"), False),
    "full-graph-b64": (full("full-graph-b64", transport="graph"), True),
    "full-smtp-plain": (full("full-smtp-plain", transport="smtp", **{"from": {"address": NOREPLY, "name": "No Reply"}}),
                        False),
    "full-smtp-b64": (full("full-smtp-b64", transport="smtp"), True),
    "minimal": ({"id": "minimal", "from": SENDER, "to": ["ana@fabrikam.example"], "text": "Hi"}, False),
    "html-only-smtp": (mail(id="html-only-smtp", text=None, html="<b>bold</b>", transport="smtp"), False),
    "text-only-graph": (mail(id="text-only-graph", transport="graph"), False),
    "cc-only": ({"id": "cc-only", "from": SENDER, "cc": ["carol@fabrikam.example"], "text": "x"}, False),
    "bcc-only-smtp": ({"id": "bcc-only-smtp", "from": SENDER, "bcc": ["hidden@fabrikam.example"], "text": "x",
                       "transport": "smtp"}, True),
    "blob-claim-check": (mail(id="blob-claim-check", attachments=[
        {"name": "big.bin", "contentType": "application/octet-stream", "blob": "{container}/producer/big.bin"}]),
        False),
    "x" * 128: (mail(id="x" * 128), False),
    "nulls-are-absent": (mail(id="nulls-are-absent", cc=None, html=None, importance=None, transport=None,
                              saveToSentItems=None, headers=None), False),
    "six-headers-smtp": (mail(id="six-headers-smtp", transport="smtp", headers={f"X-H{i}": str(i) for i in range(6)}),
                         False),
}

# key -> (queue text, the field path the detail must name). Keys are put in "text" (or are the raw text).
INVALID_RAW: dict[str, tuple[str, str]] = {
    "not-json": ("hello world", "$"),
    "json-array": ('[{"from": "a@contoso.example"}]', "$"),
    "json-string": ('"{\\"from\\": \\"a@contoso.example\\"}"', "$"),
    "truncated-json": ('{"from": "sender@contoso.example", "to": [', "$"),
    "base64-not-json": (base64.b64encode(b"just some text, not JSON").decode(), "$"),
    "base64-of-array": (base64.b64encode(b'[1, 2, 3]').decode(), "$"),
    "empty": ("   ", "$"),
}


def bad(case: str, **fields: Any) -> dict[str, Any]:
    body = mail(text=case)
    for key, value in fields.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


DROP = object()
INVALID_JSON: dict[str, tuple[dict[str, Any], str]] = {
    "no-from": (bad("no-from", **{"from": DROP}), "from"),
    "from-list": (bad("from-list", **{"from": [SENDER]}), "from"),
    "from-not-address": (bad("from-not-address", **{"from": "billing"}), "from"),
    "no-recipient": (bad("no-recipient", to=DROP), "to"),
    "to-is-a-string": (bad("to-is-a-string", to="ana@fabrikam.example"), "to"),
    "cc-object-without-address": (bad("cc-object-without-address", cc=[{"name": "Ana"}]), "cc[0].address"),
    "replyto-invalid": (bad("replyto-invalid", replyTo=["not an address"]), "replyTo[0]"),
    "subject-cr": (bad("subject-cr", subject="Hello\rBcc: x@evil.example"), "subject"),
    "subject-lf": (bad("subject-lf", subject="Hello\nBcc: x@evil.example"), "subject"),
    "subject-number": (bad("subject-number", subject=42), "subject"),
    "no-body": ({"from": SENDER, "to": ["ana@fabrikam.example"], "subject": "no-body"}, "text"),
    "attachment-no-name": (bad("attachment-no-name", attachments=[{"contentBase64": PNG}]), "attachments[0].name"),
    "attachment-both": (bad("attachment-both", attachments=[{"name": "a", "contentBase64": PNG, "blob": "c-1/a"}]),
                        "attachments[0]"),
    "attachment-neither": (bad("attachment-neither", attachments=[{"name": "a"}]), "attachments[0]"),
    "attachment-bad-base64": (bad("attachment-bad-base64", attachments=[{"name": "a", "contentBase64": "abc"}]),
                              "attachments[0].contentBase64"),
    "attachment-inline-string": (bad("attachment-inline-string", attachments=[
        {"name": "a", "contentBase64": PNG, "inline": "yes"}]), "attachments[0].inline"),
    "attachment-blob-no-path": (bad("attachment-blob-no-path", attachments=[{"name": "a", "blob": "justcontainer"}]),
                                "attachments[0].blob"),
    "header-not-x": (bad("header-not-x", headers={"Reply-To": "x@evil.example"}), "headers.Reply-To"),
    "header-value-crlf": (bad("header-value-crlf", headers={"X-A": "1\r\nBcc: x@evil.example"}), "headers.X-A"),
    "header-value-lf": (bad("header-value-lf", headers={"X-A": "1\nBcc: x@evil.example"}), "headers.X-A"),
    "importance-other": (bad("importance-other", importance="urgent"), "importance"),
    "transport-other": (bad("transport-other", transport="ews"), "transport"),
    "save-string": (bad("save-string", saveToSentItems="false"), "saveToSentItems"),
    "id-bad-chars": (bad("id-bad-chars", id="a b/c"), "id"),
    "id-too-long": (bad("id-too-long", id="y" * 129), "id"),
    "id-empty": (bad("id-empty", id=""), "id"),
    "unknown-field": (bad("unknown-field", subjet="typo"), "subjet"),
    "sender-not-allowed": (bad("sender-not-allowed", **{"from": "someone@fabrikam.example"}), "from"),
    "graph-six-headers": (bad("graph-six-headers", transport="graph",
                              headers={f"X-H{i}": str(i) for i in range(6)}), "headers"),
    # No transport: OUTBOX_TRANSPORT (graph in the harness) decides, and Graph's limit applies then.
    "default-graph-six-headers": (bad("default-graph-six-headers", headers={f"X-H{i}": str(i) for i in range(6)}),
                                  "headers"),
    "replyto-only": (bad("replyto-only", to=DROP, replyTo=["ana@fabrikam.example"]), "to"),
    "header-name-crlf": (bad("header-name-crlf", headers={"X-A\r\nBcc": "x@evil.example"}), "headers.X-A*"),
}


@dataclass
class Produced:
    values: dict[str, str]
    deliveries: dict[str, Delivery] = field(default_factory=dict)  # message id -> delivery
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    envelopes: list[Any] = field(default_factory=list)  # parsed JSON
    raw_poison: list[str] = field(default_factory=list)
    all_deliveries: list[Delivery] = field(default_factory=list)

    def envelope_for_text(self, key: str) -> dict[str, Any]:
        found = [e for e in self.envelopes if isinstance(e.get("message"), dict) and e["message"].get("text") == key]
        assert len(found) == 1, f"{len(found)} envelopes for {key!r}"
        return found[0]

    def envelope_for_raw(self, raw: str) -> dict[str, Any]:
        found = [e for e in self.envelopes if e.get("message") == raw]
        assert len(found) == 1, f"{len(found)} envelopes whose message is the raw text {raw[:40]!r}"
        return found[0]


@pytest.fixture(scope="module")
def produced(_harness_session: Harness, azurite: Azurite) -> Iterator[Produced]:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    from harness.localhost import LocalHost

    harness = _harness_session
    harness.reset()
    values = contract_values(harness, azurite)
    storage = Storage(azurite.connection_string, values)
    storage.create_queue()
    container = values["OUTBOX_ATTACHMENTS_CONTAINER"]
    # The deployment creates the container; the producer uploads with write access to it only.
    storage.blobs.create_container(container)
    storage.blobs.get_blob_client(container, "producer/big.bin").upload_blob(BLOB_BYTES)
    plain = QueueClient.from_connection_string(azurite.connection_string, values["OUTBOX_QUEUE"])
    b64 = QueueClient.from_connection_string(azurite.connection_string, values["OUTBOX_QUEUE"],
                                             message_encode_policy=TextBase64EncodePolicy())
    expected_valid = 0
    for body, as_base64 in VALID.values():
        text = json.dumps(body).replace("{container}", container)
        (b64 if as_base64 else plain).send_message(text)
        expected_valid += 1
    for raw, _ in INVALID_RAW.values():
        plain.send_message(raw)
    for body, _ in INVALID_JSON.values():
        plain.send_message(json.dumps(body))
    # A BOM and surrounding whitespace are fine (editors and .NET writers add them).
    plain.send_message("\ufeff  " + json.dumps(mail(id="bom-and-space")) + "\n")
    expected_valid += 1

    with pytest.MonkeyPatch.context() as mp:
        import os

        for key in list(os.environ):
            if key.startswith(("OUTBOX_", "IDENTITY_", "AzureWebJobs", "PYTHON_SCRIPT_FILE_NAME")) or key == "AZURE_CLIENT_ID":
                mp.delenv(key)
        host = LocalHost(app_root=ROOT, values=values, http_port=None,
                         queue_overrides={"max_polling_interval_s": 0.2, "visibility_timeout_s": 0.5})
        host.start()
        try:
            result = Produced(values)
            ids = [*(k for k in VALID), "bom-and-space"]
            for message_id in ids:
                row = storage.wait_row(message_id, "sent", "poisoned", wait=lambda s: host.wait_until(lambda: False, s))
                result.rows[message_id] = row
            result.raw_poison = storage.take_poison(len(INVALID_RAW) + len(INVALID_JSON),
                                                    wait=lambda s: host.wait_until(lambda: False, s))
            for text in result.raw_poison:
                try:
                    result.envelopes.append(json.loads(text))
                except ValueError:
                    result.envelopes.append({"unparsed": text})
            result.all_deliveries = harness.deliveries()
            by_message_id = {d.message_id: d for d in result.all_deliveries}
            for message_id, row in result.rows.items():
                if row["State"] == "sent":
                    result.deliveries[message_id] = by_message_id[row["InternetMessageId"]]
            assert not host.stats.errors, host.stats.errors
        finally:
            host.stop()
            plain.close()
            b64.close()
    yield result
    storage.close()


# -- valid messages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("message_id", [*VALID, "bom-and-space"], ids=lambda i: i[:20])
def test_valid_message_is_sent_once_and_the_row_says_so(produced: Produced, message_id: str) -> None:
    row = produced.rows[message_id]
    assert row["State"] == "sent", (row.get("LastCode"), row.get("LastDetail"))
    assert row["Attempts"] == 1
    assert isinstance(row["SentAt"], datetime)
    body = VALID.get(message_id, ({}, False))[0]
    assert row["Transport"] == (body.get("transport") or "graph")  # OUTBOX_TRANSPORT=graph in the harness
    delivery = produced.deliveries[message_id]
    assert delivery.transport == row["Transport"]
    assert sum(1 for d in produced.all_deliveries if d.message_id == delivery.message_id) == 1


def graph_message(produced: Produced, message_id: str) -> dict[str, Any]:
    delivery = produced.deliveries[message_id]
    assert delivery.graph_json is not None
    return dict(delivery.graph_json)


def addresses(recipients: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(r["emailAddress"]["address"], r["emailAddress"].get("name")) for r in recipients]


@pytest.mark.parametrize("message_id", ["full-graph-plain", "full-graph-b64"])
def test_every_field_on_graph(produced: Produced, message_id: str) -> None:
    request = graph_message(produced, message_id)
    assert request["saveToSentItems"] is False
    assert produced.deliveries[message_id].saved_to_sent_items is False
    msg = request["message"]
    assert msg["from"]["emailAddress"] == {"address": SENDER, "name": "Contoso Billing"}
    assert addresses(msg["toRecipients"]) == [("ana@fabrikam.example", None), ("raj@fabrikam.example", "Raj, Accounts")]
    assert addresses(msg["ccRecipients"]) == [("john@fabrikam.example", "Doe, John")]
    assert [a for a, _ in addresses(msg["bccRecipients"])] == ["archive@contoso.example"]
    assert [a for a, _ in addresses(msg["replyTo"])] == ["billing-help@contoso.example"]
    assert msg["subject"] == f"Invoice {message_id}"
    # text + html: Graph gets the HTML.
    assert msg["body"] == {"contentType": "HTML", "content": "<p>Your invoice is attached.</p><img src=\"cid:logo\">"}
    assert msg["importance"] == "high"
    assert msg["internetMessageHeaders"] == [{"name": "X-Invoice", "value": "2026-0042"}]
    logo, pdf = msg["attachments"]
    assert logo["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert (logo["name"], logo["contentType"], logo["contentBytes"], logo["isInline"], logo["contentId"]) == (
        "logo.png", "image/png", PNG, True, "logo")
    assert (pdf["name"], pdf["contentType"], pdf["contentBytes"], pdf.get("isInline", False)) == (
        "invoice.pdf", "application/pdf", PDF, False)
    assert produced.deliveries[message_id].mailbox == SENDER


def smtp_message(produced: Produced, message_id: str) -> EmailMessage:
    delivery = produced.deliveries[message_id]
    assert delivery.raw_mime is not None
    return email.message_from_bytes(delivery.raw_mime, policy=email.policy.default)


@pytest.mark.parametrize("message_id", ["full-smtp-plain", "full-smtp-b64"])
def test_every_field_on_smtp(produced: Produced, message_id: str) -> None:
    delivery = produced.deliveries[message_id]
    sender = NOREPLY if message_id == "full-smtp-plain" else SENDER
    assert delivery.mailbox == sender  # AUTH XOAUTH2 user= is the from address
    assert set(delivery.recipients) == {"ana@fabrikam.example", "raj@fabrikam.example", "john@fabrikam.example",
                                        "archive@contoso.example"}
    parsed = smtp_message(produced, message_id)
    assert parsed["From"].addresses[0].addr_spec == sender
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ana@fabrikam.example", "raj@fabrikam.example"]
    assert parsed["To"].addresses[1].display_name == "Raj, Accounts"
    assert parsed["Cc"].addresses[0].display_name == "Doe, John"
    assert parsed["Bcc"] is None and b"archive@contoso.example" not in (delivery.raw_mime or b"")
    assert parsed["Reply-To"].addresses[0].addr_spec == "billing-help@contoso.example"
    assert parsed["Subject"] == f"Invoice {message_id}"
    assert parsed["X-Invoice"] == "2026-0042"
    assert parsed["Importance"].lower() == "high" and parsed["X-Priority"].startswith("1")
    assert parsed["Message-ID"] == produced.rows[message_id]["InternetMessageId"]
    # Both bodies: multipart/alternative (inside mixed/related when there are attachments).
    types = [part.get_content_type() for part in parsed.walk()]
    assert "multipart/alternative" in types
    assert parsed.get_body(("plain",)).get_content().strip() == "Your invoice is attached."
    assert "cid:logo" in parsed.get_body(("html",)).get_content()
    parts = {p.get_filename(): p for p in parsed.walk() if p.get_filename()}
    assert parts["invoice.pdf"].get_content_type() == "application/pdf"
    assert parts["invoice.pdf"].get_content() == base64.b64decode(PDF)
    assert parts["logo.png"]["Content-ID"] == "<logo>"
    assert parts["logo.png"].get_content() == base64.b64decode(PNG)


def test_minimal_message_defaults(produced: Produced) -> None:
    request = graph_message(produced, "minimal")
    assert request["saveToSentItems"] is True  # design: default true, sent explicitly
    assert produced.deliveries["minimal"].saved_to_sent_items is True
    assert request["message"]["body"] == {"contentType": "Text", "content": "Hi"}
    assert "internetMessageHeaders" not in request["message"]  # an empty array is a Graph 400


def test_text_only_on_graph_and_html_only_on_smtp(produced: Produced) -> None:
    assert graph_message(produced, "text-only-graph")["message"]["body"]["contentType"] == "Text"
    parsed = smtp_message(produced, "html-only-smtp")
    assert parsed.get_content_type() == "text/html"
    assert parsed.get_content().strip() == "<b>bold</b>"


def test_more_than_five_headers_travel_by_smtp(produced: Produced) -> None:
    parsed = smtp_message(produced, "six-headers-smtp")
    assert [parsed[f"X-H{i}"] for i in range(6)] == [str(i) for i in range(6)]


def test_cc_or_bcc_alone_is_a_recipient(produced: Produced) -> None:
    assert addresses(graph_message(produced, "cc-only")["message"]["ccRecipients"]) == [("carol@fabrikam.example", None)]
    delivery = produced.deliveries["bcc-only-smtp"]
    assert delivery.recipients == ("hidden@fabrikam.example",)
    assert b"hidden@fabrikam.example" not in (delivery.raw_mime or b"")


def test_blob_attachment_claim_check(produced: Produced) -> None:
    [attachment] = graph_message(produced, "blob-claim-check")["message"]["attachments"]
    assert attachment["name"] == "big.bin"
    assert base64.b64decode(attachment["contentBytes"]) == BLOB_BYTES


# -- invalid bodies --------------------------------------------------------------------------------------


def check_envelope_shape(envelope: dict[str, Any]) -> None:
    assert envelope.get("schema") == POISON_SCHEMA
    assert set(envelope) == ENVELOPE_KEYS, sorted(envelope)
    error = envelope["error"]
    assert set(error) == ERROR_KEYS
    assert error["category"] in CATEGORIES
    assert isinstance(error["code"], str) and error["code"]
    assert error["status"] is None or isinstance(error["status"], int)
    assert error["transport"] in (None, "graph", "smtp", "entra", "keyvault", "storage")
    assert isinstance(error["retryable"], bool)
    assert isinstance(error["detail"], str) and isinstance(error["hint"], str) and error["hint"]
    assert error["requestId"] is None or isinstance(error["requestId"], str)
    assert isinstance(envelope["attempts"], int) and not isinstance(envelope["attempts"], bool)
    first = datetime.fromisoformat(envelope["firstSeen"].replace("Z", "+00:00"))
    failed = datetime.fromisoformat(envelope["failedAt"].replace("Z", "+00:00"))
    assert first.tzinfo is not None and failed.tzinfo is not None and first <= failed


def test_every_poison_message_is_an_envelope(produced: Produced) -> None:
    assert len(produced.envelopes) == len(INVALID_RAW) + len(INVALID_JSON)
    for envelope in produced.envelopes:
        check_envelope_shape(envelope)


def check_invalid(envelope: dict[str, Any], field_path: str) -> None:
    check_envelope_shape(envelope)
    error = envelope["error"]
    assert (error["category"], error["retryable"], error["status"], error["transport"]) == (
        "invalid_message", False, None, None)
    assert envelope["attempts"] == 1
    # A path ending in * names the start of the field (the rest is the offending name, escaped).
    wanted = field_path[:-1] if field_path.endswith("*") else f"{field_path}:"
    assert wanted in error["detail"], error["detail"]


@pytest.mark.parametrize("key", list(INVALID_RAW))
def test_unreadable_body_is_poisoned_with_its_raw_text(produced: Produced, key: str) -> None:
    raw, path = INVALID_RAW[key]
    check_invalid(produced.envelope_for_raw(raw), path)


@pytest.mark.parametrize("key", list(INVALID_JSON))
def test_invalid_message_is_poisoned_with_the_original(produced: Produced, key: str) -> None:
    body, path = INVALID_JSON[key]
    envelope = produced.envelope_for_text(key) if key != "no-body" else next(
        e for e in produced.envelopes if isinstance(e.get("message"), dict) and e["message"].get("subject") == "no-body")
    check_invalid(envelope, path)
    assert envelope["message"] == body  # the original, as the producer wrote it


def test_nothing_invalid_was_sent(produced: Produced) -> None:
    sent_ids = {d.message_id for d in produced.all_deliveries}
    assert len(sent_ids) == len(produced.deliveries) == len(VALID) + 1
