"""Queue bodies and poison envelopes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from shared.errors import OutboxError
from shared.message import decode_body
from shared.storage.queues import (
    MAX_QUEUE_MESSAGE_BYTES,
    POISON_SCHEMA,
    encode_body,
    fits_queue,
    poison_blob_name,
    poison_envelope,
    queue_text_bytes,
)


def test_encoded_bodies_decode_back_plain_and_base64() -> None:
    body = {"id": "x1", "from": "a@contoso.example", "subject": "Grüße"}
    plain = encode_body(body)
    assert plain.startswith("{") and "Grüße" in plain
    assert decode_body(plain) == body
    b64 = encode_body(body, base64_encode=True)
    assert base64.b64decode(b64).decode() == plain
    assert decode_body(b64) == body


def test_queue_size_counts_xml_escaping_and_utf8() -> None:
    assert queue_text_bytes("<&>") == len("&lt;&amp;&gt;")
    assert queue_text_bytes("é") == 2
    assert fits_queue("a" * 60_000)
    assert not fits_queue("<" * (MAX_QUEUE_MESSAGE_BYTES // 4 + 1))


def test_envelope_shape_follows_the_design() -> None:
    err = OutboxError("permission", "ErrorAccessDenied", status=403, transport="graph", hint="scope it",
                      request_id="rid", detail="Access to OData is disabled: [RAOP] ...")
    env = poison_envelope({"id": "m"}, err, attempts=2, first_seen=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                          failed_at=datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC), message_id="m")
    assert env["schema"] == POISON_SCHEMA
    assert set(env) == {"schema", "message", "error", "attempts", "firstSeen", "failedAt"}
    assert env["firstSeen"] == "2026-01-02T03:04:05.000Z" and env["failedAt"] == "2026-01-02T03:05:00.000Z"
    assert list(env["error"]) == ["category", "code", "status", "transport", "retryable", "detail", "hint",
                                  "requestId"]
    json.dumps(env)  # serialisable as is


def test_envelope_detail_is_redacted_and_clipped() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJlc2ln"
    err = OutboxError("auth", "401", detail=f"Bearer {token} " + "y" * 5000)
    env = poison_envelope("raw", err, attempts=1, first_seen=None)
    assert token not in env["error"]["detail"] and len(env["error"]["detail"]) <= 2000


def test_poison_blob_names_are_safe_paths() -> None:
    name = poison_blob_name("a/b?c", "2026-01-02T03:04:05.000Z")
    assert name == "poison/a_b_c/20260102T030405000Z.json"


def test_envelope_fills_the_id_into_a_message_object_without_one() -> None:
    err = OutboxError("permission", "ErrorAccessDenied")
    assert poison_envelope({"from": "a@b.example"}, err, attempts=1, first_seen=None,
                           message_id="q-1")["message"] == {"from": "a@b.example", "id": "q-1"}
    assert poison_envelope({"id": "own"}, err, attempts=1, first_seen=None, message_id="q-1")["message"] == {"id": "own"}
    assert poison_envelope("raw text", err, attempts=1, first_seen=None, message_id="q-1")["message"] == "raw text"
