"""parse_message: every rule of the v1 contract, and the field path each problem is reported on."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from shared.addresses import Address
from shared.message import (
    Attachment,
    FieldError,
    InvalidMessage,
    Message,
    parse_message,
    validate_for_transport,
)

MINIMAL: dict[str, Any] = {"from": "app@contoso.example", "to": ["user@fabrikam.example"], "text": "hi"}


def with_changes(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        key = {"from_": "from", "reply_to": "replyTo", "save": "saveToSentItems"}.get(key, key)
        if value is _DELETE:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DELETE = object()


def fields_of(exc: InvalidMessage) -> list[str]:
    return [e.field for e in exc.errors]


# ------------------------------------------------------------------------------ valid input


def test_minimal_message() -> None:
    message = parse_message(MINIMAL)
    assert message == Message(
        sender=Address("app@contoso.example"),
        to=(Address("user@fabrikam.example"),),
        text="hi",
    )
    assert message.subject == ""
    assert message.html is None and message.id is None and message.save_to_sent_items is None


def test_full_message() -> None:
    body = {
        "id": "order-42:v1@shop.example",
        "from": {"address": "app@contoso.example", "name": "Shop @ Contoso"},
        "to": ["a@x.example", {"address": "b@x.example", "name": "Bee"}],
        "cc": ['"Doe, John" <john@x.example>'],
        "bcc": ["audit@contoso.example"],
        "replyTo": ["support@contoso.example"],
        "subject": "Your order\tis on its way",
        "text": "plain",
        "html": "<p>rich</p>",
        "attachments": [
            {"name": "invoice.pdf", "contentBase64": base64.b64encode(b"%PDF").decode()},
            {"name": "logo.png", "contentBase64": "iVBORw==", "inline": True, "contentId": "logo1"},
            {"name": "big.zip", "blob": "outbox-attachments/2024/05/big.zip", "contentType": "Application/Zip"},
        ],
        "headers": {"X-Order": "42", "x-tenant": " t1 "},
        "importance": "HIGH",
        "transport": "Graph",
        "saveToSentItems": False,
    }
    message = parse_message(body)
    assert message.id == "order-42:v1@shop.example"
    assert message.sender == Address("app@contoso.example", "Shop @ Contoso")
    assert message.to == (Address("a@x.example"), Address("b@x.example", "Bee"))
    assert message.cc == (Address("john@x.example", "Doe, John"),)
    assert message.bcc == (Address("audit@contoso.example"),)
    assert message.reply_to == (Address("support@contoso.example"),)
    assert message.subject == "Your order\tis on its way"
    assert (message.text, message.html) == ("plain", "<p>rich</p>")
    assert message.attachments == (
        Attachment("invoice.pdf", "application/pdf", content=b"%PDF", size=4),
        Attachment("logo.png", "image/png", content=b"\x89PNG", size=4, inline=True, content_id="logo1"),
        Attachment("big.zip", "application/zip", blob="outbox-attachments/2024/05/big.zip"),
    )
    assert message.attachments[2].blob_container == "outbox-attachments"
    assert message.attachments[2].blob_path == "2024/05/big.zip"
    assert message.headers == (("X-Order", "42"), ("x-tenant", "t1"))
    assert message.header("X-TENANT") == "t1"
    assert (message.importance, message.transport, message.save_to_sent_items) == ("high", "graph", False)
    assert message.recipients == message.to + message.cc + message.bcc


def test_null_means_absent_for_optional_fields() -> None:
    body = with_changes(id=None, cc=None, subject=None, html=None, attachments=None, headers=None,
                        importance=None, transport=None, save=None)
    assert parse_message(body) == parse_message(MINIMAL)


def test_html_only_and_bcc_only_are_enough() -> None:
    message = parse_message({"from": "a@x.example", "bcc": ["b@x.example"], "html": ""})
    assert message.html == "" and message.text is None and message.bcc


def test_attachment_content_type_is_guessed_from_the_name() -> None:
    body = with_changes(attachments=[
        {"name": "a.pdf", "contentBase64": ""},
        {"name": "noext", "contentBase64": ""},
    ])
    first, second = parse_message(body).attachments
    assert first.content_type == "application/pdf" and first.content == b"" and first.size == 0
    assert second.content_type == "application/octet-stream"


def test_line_wrapped_base64_is_accepted() -> None:
    data = bytes(range(256)) * 3
    wrapped = base64.encodebytes(data).decode()  # 76 columns with newlines
    message = parse_message(with_changes(attachments=[{"name": "a.bin", "contentBase64": wrapped}]))
    assert message.attachments[0].content == data


def test_with_content_loads_a_blob_attachment() -> None:
    message = parse_message(with_changes(attachments=[{"name": "a.txt", "blob": "box/a.txt"}]))
    (attachment,) = message.attachments
    assert attachment.content is None and attachment.size is None
    loaded = attachment.with_content(b"abc")
    assert (loaded.content, loaded.size, loaded.blob) == (b"abc", 3, "box/a.txt")


def test_recipient_limit_counts_distinct_addresses_and_is_a_parameter() -> None:
    many = [f"u{i}@x.example" for i in range(500)]
    assert len(parse_message(with_changes(to=many)).to) == 500
    # the same address twice (any case) counts once
    assert parse_message(with_changes(to=[*many, "U0@X.example"]))
    with pytest.raises(InvalidMessage) as caught:
        parse_message(with_changes(to=[*many, "extra@x.example"]))
    assert fields_of(caught.value) == ["to"]
    assert "501 recipients" in str(caught.value)
    with pytest.raises(InvalidMessage):
        parse_message(with_changes(to=["a@x.example"], cc=["b@x.example"]), max_recipients=1)


def test_subject_length_limit_is_a_parameter() -> None:
    assert parse_message(with_changes(subject="s" * 998))
    with pytest.raises(InvalidMessage) as caught:
        parse_message(with_changes(subject="s" * 11), max_subject_length=10)
    assert fields_of(caught.value) == ["subject"]


# --------------------------------------------------------------------------- invalid input

BAD_INPUTS: list[tuple[str, dict[str, Any], list[str]]] = [
    # top level
    ("unknown field", with_changes(subjet="hi"), ["subjet"]),
    ("case of a field name", with_changes(Subject="hi"), ["Subject"]),
    ("alias body", with_changes(body="hi"), ["body"]),
    # id
    ("id with a space", with_changes(id="a b"), ["id"]),
    ("id too long", with_changes(id="a" * 129), ["id"]),
    ("id empty", with_changes(id=""), ["id"]),
    ("id number", with_changes(id=42), ["id"]),
    # from
    ("from missing", with_changes(from_=_DELETE), ["from"]),
    ("from a list", with_changes(from_=["a@x.example"]), ["from"]),
    ("from a number", with_changes(from_=7), ["from"]),
    ("from no domain", with_changes(from_="app@"), ["from"]),
    ("from object without address", with_changes(from_={"name": "App"}), ["from.address"]),
    ("from object unknown key", with_changes(from_={"address": "a@x.example", "mail": "x"}), ["from.mail"]),
    ("from name a number", with_changes(from_={"address": "a@x.example", "name": 5}), ["from.name"]),
    ("from name with LF", with_changes(from_={"address": "a@x.example", "name": "A\nB"}), ["from.name"]),
    # recipients
    ("no recipient", with_changes(to=[]), ["to"]),
    ("to a string", with_changes(to="user@x.example"), ["to"]),
    ("to an object", with_changes(to={"address": "user@x.example"}), ["to"]),
    ("to item bad", with_changes(to=["ok@x.example", "ok2@x.example", "bad"]), ["to[2]"]),
    ("to item number", with_changes(to=[1]), ["to[0]"]),
    ("to object bad address", with_changes(to=[{"address": "nope"}]), ["to[0].address"]),
    ("to object address with name", with_changes(to=[{"address": "Bob <b@x.example>"}]), ["to[0].address"]),
    ("cc item injection", with_changes(cc=["a@x.example\r\nBcc: evil@x.example"]), ["cc[0]"]),
    ("bcc item null", with_changes(bcc=[None]), ["bcc[0]"]),
    ("replyTo bad", with_changes(reply_to=["x"]), ["replyTo[0]"]),
    ("replyTo alone is no recipient", with_changes(to=_DELETE, reply_to=["r@x.example"]), ["to"]),
    # subject and bodies
    ("subject CRLF", with_changes(subject="Hi\r\nBcc: evil@x.example"), ["subject"]),
    ("subject LF", with_changes(subject="Hi\n"), ["subject"]),
    ("subject control", with_changes(subject="Hi\x07"), ["subject"]),
    ("subject line separator", with_changes(subject="Hi\u2028there"), ["subject"]),
    ("subject number", with_changes(subject=5), ["subject"]),
    ("no body", with_changes(text=_DELETE), ["text"]),
    ("text number", with_changes(text=5), ["text"]),
    ("html list", with_changes(html=["<p>"]), ["html"]),
    ("text NUL", with_changes(text="a\x00b"), ["text"]),
    # attachments
    ("attachments object", with_changes(attachments={"name": "a"}), ["attachments"]),
    ("attachment string", with_changes(attachments=["a.pdf"]), ["attachments[0]"]),
    ("attachment no name", with_changes(attachments=[{"contentBase64": "QUJD"}]), ["attachments[0].name"]),
    ("attachment path name", with_changes(attachments=[{"name": "../etc/passwd", "contentBase64": ""}]), ["attachments[0].name"]),
    ("attachment backslash", with_changes(attachments=[{"name": "C:\\a.txt", "contentBase64": ""}]), ["attachments[0].name"]),
    ("attachment name CR", with_changes(attachments=[{"name": "a\r.txt", "contentBase64": ""}]), ["attachments[0].name"]),
    ("attachment name blank", with_changes(attachments=[{"name": "  ", "contentBase64": ""}]), ["attachments[0].name"]),
    ("attachment dotdot", with_changes(attachments=[{"name": "..", "contentBase64": ""}]), ["attachments[0].name"]),
    ("attachment both", with_changes(attachments=[{"name": "a", "contentBase64": "", "blob": "box/a"}]), ["attachments[0]"]),
    ("attachment neither", with_changes(attachments=[{"name": "a"}]), ["attachments[0]"]),
    ("base64 padding", with_changes(attachments=[{"name": "a", "contentBase64": "QUI"}]), ["attachments[0].contentBase64"]),
    ("base64 alphabet", with_changes(attachments=[{"name": "a", "contentBase64": "QU*D"}]), ["attachments[0].contentBase64"]),
    ("base64 urlsafe", with_changes(attachments=[{"name": "a", "contentBase64": "-_-_"}]), ["attachments[0].contentBase64"]),
    ("base64 data after padding", with_changes(attachments=[{"name": "a", "contentBase64": "QQ==QUJD"}]), ["attachments[0].contentBase64"]),
    ("base64 non-ascii", with_changes(attachments=[{"name": "a", "contentBase64": "QUJé"}]), ["attachments[0].contentBase64"]),
    ("base64 number", with_changes(attachments=[{"name": "a", "contentBase64": 12}]), ["attachments[0].contentBase64"]),
    ("blob no path", with_changes(attachments=[{"name": "a", "blob": "container"}]), ["attachments[0].blob"]),
    ("blob bad container", with_changes(attachments=[{"name": "a", "blob": "My_Box/a"}]), ["attachments[0].blob"]),
    ("blob short container", with_changes(attachments=[{"name": "a", "blob": "ab/a"}]), ["attachments[0].blob"]),
    ("blob double hyphen", with_changes(attachments=[{"name": "a", "blob": "a--b/a"}]), ["attachments[0].blob"]),
    ("blob dotdot", with_changes(attachments=[{"name": "a", "blob": "box/../secret"}]), ["attachments[0].blob"]),
    ("blob empty segment", with_changes(attachments=[{"name": "a", "blob": "box//a"}]), ["attachments[0].blob"]),
    ("content type no subtype", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentType": "pdf"}]), ["attachments[0].contentType"]),
    ("content type params", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentType": "text/plain; charset=x"}]), ["attachments[0].contentType"]),
    ("content type multipart", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentType": "multipart/mixed"}]), ["attachments[0].contentType"]),
    ("inline string", with_changes(attachments=[{"name": "a", "contentBase64": "", "inline": "yes"}]), ["attachments[0].inline"]),
    ("inline number", with_changes(attachments=[{"name": "a", "contentBase64": "", "inline": 1}]), ["attachments[0].inline"]),
    ("content id brackets", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentId": "<x>"}]), ["attachments[0].contentId"]),
    ("content id space", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentId": "a b"}]), ["attachments[0].contentId"]),
    ("content id CRLF", with_changes(attachments=[{"name": "a", "contentBase64": "", "contentId": "a\r\nb"}]), ["attachments[0].contentId"]),
    ("content id duplicate", with_changes(attachments=[
        {"name": "a", "contentBase64": "", "contentId": "logo"},
        {"name": "b", "contentBase64": "", "contentId": "LOGO"},
    ]), ["attachments[1].contentId"]),
    ("attachment unknown key", with_changes(attachments=[{"name": "a", "contentBase64": "", "content": "x"}]), ["attachments[0].content"]),
    # headers
    ("headers list", with_changes(headers=[["X-A", "1"]]), ["headers"]),
    ("header not X-", with_changes(headers={"Foo": "1"}), ["headers.Foo"]),
    ("header Bcc", with_changes(headers={"Bcc": "evil@x.example"}), ["headers.Bcc"]),
    ("header bare X-", with_changes(headers={"X-": "1"}), ["headers.X-"]),
    ("header name space", with_changes(headers={"X-A B": "1"}), ["headers.X-A B"]),
    ("header name colon", with_changes(headers={"X-A:": "1"}), ["headers.X-A:"]),
    ("header value CRLF", with_changes(headers={"X-A": "1\r\nBcc: evil@x.example"}), ["headers.X-A"]),
    ("header value number", with_changes(headers={"X-A": 1}), ["headers.X-A"]),
    ("header duplicate", with_changes(headers={"X-A": "1", "x-a": "2"}), ["headers.x-a"]),
    ("header exchange reserved", with_changes(headers={"X-MS-Exchange-Organization-SCL": "-1"}), ["headers.X-MS-Exchange-Organization-SCL"]),
    ("header X-Priority with importance", with_changes(headers={"X-Priority": "1"}, importance="high"), ["headers.X-Priority"]),
    ("header value too long", with_changes(headers={"X-A": "v" * 999}), ["headers.X-A"]),
    ("six headers on graph", with_changes(headers={f"X-H{i}": "v" for i in range(6)}, transport="graph"), ["headers"]),
    # enums and flags
    ("importance urgent", with_changes(importance="urgent"), ["importance"]),
    ("importance number", with_changes(importance=1), ["importance"]),
    ("transport ews", with_changes(transport="ews"), ["transport"]),
    ("save string", with_changes(save="false"), ["saveToSentItems"]),
    ("save number", with_changes(save=0), ["saveToSentItems"]),
]


@pytest.mark.parametrize(("case", "body", "expected_fields"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_the_field(case: str, body: dict[str, Any], expected_fields: list[str]) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(body)
    assert fields_of(caught.value) == expected_fields, str(caught.value)
    for field_path in expected_fields:
        assert field_path in str(caught.value)


@pytest.mark.parametrize("data", [None, [], "text", 5, True, [MINIMAL]])
def test_non_object_is_reported_on_the_root(data: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(data)
    assert fields_of(caught.value) == ["$"]


def test_all_problems_are_reported_together_in_str() -> None:
    body = {
        "from": "nobody",
        "to": ["fine@x.example", 3],
        "subject": "a\nb",
        "attachments": [{"name": "a/b", "contentBase64": "%%%"}],
        "importance": "urgent",
        "subjet": "typo",
    }
    with pytest.raises(InvalidMessage) as caught:
        parse_message(body)
    fields = fields_of(caught.value)
    assert set(fields) == {
        "subjet", "from", "to[1]", "subject", "text",
        "attachments[0].name", "attachments[0].contentBase64", "importance",
    }  # fmt: skip
    text = str(caught.value)
    assert text.startswith(f"invalid message ({len(fields)} problems): ")
    assert all(f in text for f in fields)
    assert "did you mean 'subject'?" in text
    assert caught.value.to_list()[0].keys() == {"field", "message"}
    assert caught.value.category == "invalid_message"


def test_error_text_never_carries_line_breaks_from_the_input() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(with_changes(**{"X\r\nInjected": 1}, id="a\r\nb"))
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)


def test_type_errors_name_the_received_type() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(with_changes(subject=5, to=[True], save="yes"))
    messages = {e.field: e.message for e in caught.value.errors}
    assert "got a number" in messages["subject"]
    assert "got a boolean" in messages["to[0]"]
    assert "got a string" in messages["saveToSentItems"]


def test_five_headers_are_fine_and_six_only_fail_for_graph() -> None:
    five = {f"X-H{i}": "v" for i in range(5)}
    six = {f"X-H{i}": "v" for i in range(6)}
    assert parse_message(with_changes(headers=five, transport="graph"))
    smtp = parse_message(with_changes(headers=six, transport="smtp"))
    unset = parse_message(with_changes(headers=six))
    validate_for_transport(unset, "smtp")
    with pytest.raises(InvalidMessage) as caught:
        validate_for_transport(unset, "graph")
    assert caught.value.errors == [FieldError("headers", caught.value.errors[0].message)]
    assert "at most 5" in str(caught.value)
    assert len(smtp.headers) == 6


def test_repr_never_shows_content() -> None:
    secret = b"S3CR3T-PAYLOAD" * 100
    message = parse_message(with_changes(
        text="body text that is long " * 10,
        attachments=[{"name": "a.bin", "contentBase64": base64.b64encode(secret).decode()}],
    ))
    shown = repr(message)
    assert "S3CR3T" not in shown and base64.b64encode(secret).decode()[:20] not in shown
    assert "body text" not in shown
    assert "size=1400" in shown and "a.bin" in shown
    assert "S3CR3T" not in repr(message.attachments[0])
