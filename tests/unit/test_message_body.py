"""Queue bodies (decode_body), the sender allow-list, and the requeue form (message_to_json)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from shared.message import (
    InvalidMessage,
    Message,
    check_sender_allowed,
    decode_body,
    message_to_json,
    normalize_sender_pattern,
    parse_message,
    sender_allowed,
)

BODY = {"from": "app@contoso.example", "to": ["u@x.example"], "subject": "Grüße", "text": "hi"}
JSON_TEXT = json.dumps(BODY, ensure_ascii=False)


# ---------------------------------------------------------------------------------- decode_body


@pytest.mark.parametrize(
    "raw",
    [
        JSON_TEXT,
        JSON_TEXT.encode("utf-8"),
        "\ufeff" + JSON_TEXT,
        b"\xef\xbb\xbf" + JSON_TEXT.encode(),
        "  \r\n\t" + JSON_TEXT + "\n",
        base64.b64encode(JSON_TEXT.encode()).decode(),
        base64.b64encode(JSON_TEXT.encode()),
        base64.b64encode(b"\xef\xbb\xbf" + JSON_TEXT.encode()).decode(),
        base64.encodebytes(JSON_TEXT.encode()).decode(),  # wrapped at 76 columns
        " " + base64.b64encode(JSON_TEXT.encode()).decode() + "\n",
    ],
    ids=["str", "bytes", "bom-str", "bom-bytes", "whitespace", "base64", "base64-bytes",
         "base64-of-bom", "base64-wrapped", "base64-whitespace"],
)
def test_plain_and_base64_bodies_decode_to_the_same_object(raw: str | bytes) -> None:
    assert decode_body(raw) == BODY


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("hello world", ["neither JSON", "'hello world'", "base64"]),
        ('"{\\"a\\": 1}"', ["JSON string", "send the object itself"]),
        ("[1, 2]", ["JSON array"]),
        ("{not json", ["plain JSON", "not valid JSON", "line 1 column 2"]),
        ('{"a": 1} trailing', ["not valid JSON"]),
        ('{"to": 1, "to": 2}', ["to", "twice"]),
        (b"\xff\xfe{\x00", ["not UTF-8", "4 bytes"]),
        (base64.b64encode(b"hello").decode(), ["base64", "not a JSON object", "'hello'"]),
        (base64.b64encode(b"[1]").decode(), ["base64", "not a JSON object"]),
        (base64.b64encode(b"\xff\xfe\xfd").decode(), ["base64", "not UTF-8"]),
        (base64.b64encode(base64.b64encode(JSON_TEXT.encode())).decode(), ["encoded twice"]),
        (base64.b64encode(b'{"a": ').decode(), ["base64-decoded JSON", "not valid JSON"]),
        ("QUJD=", ["neither JSON"]),
        ('{"a":' + "[" * 100_000, ["nested too deeply"]),
    ],
)
def test_undecodable_bodies_say_what_was_received(raw: str | bytes, fragments: list[str]) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_body(raw)
    assert [e.field for e in caught.value.errors] in (["$"], ["to"])
    text = str(caught.value)
    for fragment in fragments:
        assert fragment in text


def test_excerpt_of_a_long_body_is_bounded_and_single_line() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_body("garbage\r\nX-Injected: 1 " + "x" * 10_000)
    text = str(caught.value)
    assert len(text) < 600
    assert "\n" not in text and "\r" not in text
    assert "10" in text  # the received length is reported


def test_non_text_input_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage):
        decode_body(42)


# ----------------------------------------------------------------------------- sender allow-list


def message_from(sender: str) -> Message:
    return parse_message({**BODY, "from": sender})


@pytest.mark.parametrize(
    ("sender", "allowed", "ok"),
    [
        ("app@contoso.example", ["app@contoso.example"], True),
        ("App@Contoso.Example", ["app@CONTOSO.example"], True),
        ("app@contoso.example", ["*@contoso.example"], True),
        ("app@contoso.example", ["*@CONTOSO.EXAMPLE"], True),
        ("app@contoso.example", ["other@contoso.example", " *@contoso.example "], True),
        ("app@sub.contoso.example", ["*@contoso.example"], False),
        ("app@contoso.example.evil", ["*@contoso.example"], False),
        ("app@contoso.example", ["pp@contoso.example"], False),
        ("app@contoso.example", ["*"], False),
        ("app@contoso.example", ["contoso.example"], False),
        ("app@xn--bcher-kva.example", ["*@bücher.example"], True),
        ("app@bücher.example", ["app@xn--bcher-kva.example"], True),
    ],
)
def test_sender_patterns(sender: str, allowed: list[str], ok: bool) -> None:
    message = message_from(sender)
    assert sender_allowed(message.sender.address, allowed) is ok
    if ok:
        check_sender_allowed(message, allowed)
    else:
        with pytest.raises(InvalidMessage) as caught:
            check_sender_allowed(message, allowed)
        assert [e.field for e in caught.value.errors] == ["from"]
        assert "not an allowed sender" in str(caught.value)


def test_empty_allow_list_allows_nobody() -> None:
    with pytest.raises(InvalidMessage) as caught:
        check_sender_allowed(message_from("app@contoso.example"), [])
    assert [e.field for e in caught.value.errors] == ["from"]
    assert "OUTBOX_ALLOWED_SENDERS is empty" in str(caught.value)


def test_sender_pattern_normalisation_rejects_nonsense() -> None:
    assert normalize_sender_pattern(" *@Bücher.example ") == "*@xn--bcher-kva.example"
    assert normalize_sender_pattern("App@Contoso.example") == "app@contoso.example"
    for bad in ["*", "contoso.example", "*@", "a@b", "*.contoso.example"]:
        with pytest.raises(ValueError):
            normalize_sender_pattern(bad)


# ----------------------------------------------------------------------------- message_to_json

FULL = {
    "from": {"address": "app@contoso.example", "name": "App, Inc."},
    "to": ["a@x.example", {"address": "b@x.example", "name": "Bée"}],
    "cc": ["c@x.example"],
    "bcc": ["d@x.example"],
    "replyTo": [{"address": "r@x.example", "name": "Replies"}],
    "subject": "s",
    "text": "t",
    "html": "<b>h</b>",
    "attachments": [
        {"name": "a.txt", "contentBase64": "QUJD", "inline": True, "contentId": "a1"},
        {"name": "b.bin", "blob": "outbox-attachments/b.bin"},
    ],
    "headers": {"X-One": "1", "X-Two": "2"},
    "importance": "low",
    "transport": "smtp",
    "saveToSentItems": False,
}


def test_message_to_json_fills_the_id_and_round_trips() -> None:
    message = parse_message(FULL)
    body = message_to_json(message, id="queue-msg-1")
    assert body["id"] == "queue-msg-1"
    assert body["from"] == {"address": "app@contoso.example", "name": "App, Inc."}
    assert body["to"] == ["a@x.example", {"address": "b@x.example", "name": "Bée"}]
    assert body["attachments"] == [
        {"name": "a.txt", "contentType": "text/plain", "contentBase64": "QUJD", "inline": True, "contentId": "a1"},
        {"name": "b.bin", "contentType": "application/octet-stream", "blob": "outbox-attachments/b.bin"},
    ]
    # it survives the queue: JSON text, then decode_body + parse_message
    again = parse_message(decode_body(json.dumps(body)))
    assert again == replace(message, id="queue-msg-1")


def test_message_to_json_keeps_blob_references_even_when_loaded() -> None:
    message = parse_message(FULL)
    loaded = replace(message, attachments=(message.attachments[0], message.attachments[1].with_content(b"x" * 10)))
    body = message_to_json(loaded, id="k")
    assert body["attachments"][1] == {
        "name": "b.bin", "contentType": "application/octet-stream", "blob": "outbox-attachments/b.bin",
    }


def test_message_to_json_minimal_and_bad_id() -> None:
    message = parse_message(BODY)
    assert message_to_json(message, id="x") == {
        "id": "x", "from": "app@contoso.example", "to": ["u@x.example"], "subject": "Grüße", "text": "hi",
    }
    with pytest.raises(ValueError):
        message_to_json(message, id="not valid")
