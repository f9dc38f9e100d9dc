"""MIME for SMTP: headers, structure, encodings, Message-ID and the envelope."""

from __future__ import annotations

import base64
import email
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from shared.message import Message, parse_message
from shared.message_id import is_outbox_message_id, make_message_id
from shared.render_mime import envelope_recipients, render_mime, to_bytes

MID = "<outbox.0123456789abcdef0123456789abcdef@contoso.example>"
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def build(**fields: Any) -> Message:
    body: dict[str, Any] = {"from": "app@contoso.example", "to": ["u@x.example"]}
    body.update(fields)
    if "text" not in body and "html" not in body:
        body["text"] = "hello"
    return parse_message(body)


def wire(message: Message) -> bytes:
    return to_bytes(render_mime(message, message_id=MID, date=WHEN))


def reparse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def unix(text: str) -> str:
    """Decoded text parts keep the wire's CRLF; compare with LF."""
    return text.replace("\r\n", "\n")


def structure(part: EmailMessage) -> Any:
    if part.is_multipart():
        return (part.get_content_type(), [structure(p) for p in part.iter_parts()])
    return part.get_content_type()


def test_headers_of_a_full_message() -> None:
    message = build(
        **{"from": {"address": "app@contoso.example", "name": "Shop @ Contoso, Inc."}},
        to=['"Doe, John" <john@x.example>', "Jörg <j@bücher.example>"],
        cc=["c@x.example"],
        bcc=["hidden@x.example"],
        replyTo=["help@contoso.example"],
        subject="Grüße aus Köln",
        headers={"X-Order": "42", "X-Note": "naïve"},
        importance="high",
    )
    data = wire(message)
    assert data.isascii()
    parsed = reparse(data)
    assert parsed["From"] == '"Shop @ Contoso, Inc." <app@contoso.example>'
    assert parsed["From"].addresses[0].display_name == "Shop @ Contoso, Inc."
    assert [a.addr_spec for a in parsed["To"].addresses] == ["john@x.example", "j@xn--bcher-kva.example"]
    assert [a.display_name for a in parsed["To"].addresses] == ["Doe, John", "Jörg"]
    assert parsed["Cc"] == "c@x.example"
    assert parsed["Reply-To"] == "help@contoso.example"
    assert parsed["Subject"] == "Grüße aus Köln"
    assert b"=?utf-8?" in data  # RFC 2047 on the wire
    assert parsed["Date"].datetime == WHEN
    assert parsed["Message-ID"] == MID
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Importance"] == "high" and parsed["X-Priority"] == "1 (Highest)"
    assert parsed["X-Order"] == "42" and parsed["X-Note"] == "naïve"
    assert "Bcc" not in parsed
    assert b"hidden@x.example" not in data


@pytest.mark.parametrize(("importance", "priority"), [("low", "5 (Lowest)"), ("normal", "3 (Normal)")])
def test_importance_headers(importance: str, priority: str) -> None:
    parsed = reparse(wire(build(importance=importance)))
    assert (parsed["Importance"], parsed["X-Priority"]) == (importance, priority)


def test_no_importance_no_priority_headers() -> None:
    parsed = reparse(wire(build()))
    assert "Importance" not in parsed and "X-Priority" not in parsed


def test_bcc_only_message_has_no_to_header_but_an_envelope() -> None:
    message = parse_message({"from": "a@x.example", "bcc": ["b@x.example"], "text": "t"})
    parsed = reparse(wire(message))
    assert "To" not in parsed and "Bcc" not in parsed
    assert envelope_recipients(message) == ["b@x.example"]


def test_envelope_recipients_deduplicate_case_insensitively_in_order() -> None:
    message = build(to=["A@x.example", "b@x.example"], cc=["a@X.example", "c@x.example"], bcc=["B@x.example", "d@x.example"])
    assert envelope_recipients(message) == ["A@x.example", "b@x.example", "c@x.example", "d@x.example"]


def test_date_defaults_to_now_and_naive_means_utc() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    parsed = reparse(to_bytes(render_mime(build(), message_id=MID)))
    assert before <= parsed["Date"].datetime <= datetime.now(UTC) + timedelta(seconds=1)
    naive = reparse(to_bytes(render_mime(build(), message_id=MID, date=datetime(2024, 1, 1, 12))))
    assert naive["Date"].datetime == datetime(2024, 1, 1, 12, tzinfo=UTC)
    offset = timezone(timedelta(hours=2))
    aware = reparse(to_bytes(render_mime(build(), message_id=MID, date=datetime(2024, 1, 1, 12, tzinfo=offset))))
    assert aware["Date"].datetime == datetime(2024, 1, 1, 10, tzinfo=UTC)


# ------------------------------------------------------------------------------- structure

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
PDF = base64.b64encode(b"%PDF-1.7\n").decode()
INLINE = {"name": "logo.png", "contentBase64": PNG, "inline": True, "contentId": "logo"}
FILE = {"name": "invoice.pdf", "contentBase64": PDF}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": "t"}, "text/plain"),
        ({"html": "<p>h</p>"}, "text/html"),
        ({"text": "t", "html": "<p>h</p>"}, ("multipart/alternative", ["text/plain", "text/html"])),
        ({"text": "t", "attachments": [FILE]}, ("multipart/mixed", ["text/plain", "application/pdf"])),
        (
            {"html": "<img src=cid:logo>", "attachments": [INLINE]},
            ("multipart/related", ["text/html", "image/png"]),
        ),
        (
            {"text": "t", "html": "<img src=cid:logo>", "attachments": [INLINE]},
            ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        ),
        (
            {"text": "t", "html": "<img src=cid:logo>", "attachments": [INLINE, FILE]},
            (
                "multipart/mixed",
                [
                    ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
                    "application/pdf",
                ],
            ),
        ),
        # an inline part with a contentId but no html to reference it is an ordinary part
        ({"text": "t", "attachments": [INLINE]}, ("multipart/mixed", ["text/plain", "image/png"])),
    ],
    ids=["text", "html", "alternative", "mixed", "related", "alt-related", "mixed-alt-related", "inline-no-html"],
)
def test_mime_structure(fields: dict[str, Any], expected: Any) -> None:
    parsed = reparse(wire(build(**fields)))
    assert structure(parsed) == expected


def test_parts_carry_content_ids_dispositions_and_bytes() -> None:
    message = build(text="t", html='<img src="cid:logo">', attachments=[INLINE, FILE])
    parsed = reparse(wire(message))
    logo = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert logo["Content-ID"] == "<logo>"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_filename() == "logo.png"
    assert logo.get_content() == b"\x89PNG\r\n\x1a\n"
    related = next(p for p in parsed.walk() if p.get_content_type() == "multipart/related")
    assert related.get_param("type") == "text/html"
    pdf = next(p for p in parsed.walk() if p.get_content_type() == "application/pdf")
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_content() == b"%PDF-1.7\n"
    assert unix(parsed.get_body(("plain",)).get_content()) == "t\n"
    assert unix(parsed.get_body(("html",)).get_content()) == '<img src="cid:logo">\n'


def test_inline_without_content_id_is_an_inline_part_of_mixed() -> None:
    message = build(text="t", attachments=[{"name": "a.txt", "contentBase64": "QUJD", "inline": True}])
    part = next(p for p in reparse(wire(message)).walk() if p.get_filename() == "a.txt")
    assert part.get_content_disposition() == "inline"


def test_non_ascii_file_name_is_rfc2231_encoded() -> None:
    message = build(attachments=[{"name": "Résumé 2024.pdf", "contentBase64": PDF}])
    data = wire(message)
    assert b"filename*=utf-8''R%C3%A9sum%C3%A9%202024.pdf" in data
    part = next(p for p in reparse(data).walk() if p.get_content_type() == "application/pdf")
    assert part.get_filename() == "Résumé 2024.pdf"


def test_message_rfc822_attachment_travels_as_an_opaque_file() -> None:
    eml = base64.b64encode(b"Subject: old\r\n\r\nbody\r\n").decode()
    message = build(attachments=[{"name": "old.eml", "contentType": "message/rfc822", "contentBase64": eml}])
    data = wire(message)
    part = next(p for p in reparse(data).walk() if p.get_filename() == "old.eml")
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_content() == b"Subject: old\r\n\r\nbody\r\n"


def test_unloaded_blob_attachment_is_a_clear_error() -> None:
    message = build(attachments=[{"name": "r.pdf", "blob": "box/r.pdf"}])
    with pytest.raises(ValueError, match=r"attachments\[0\].*box/r.pdf.*not loaded"):
        render_mime(message, message_id=MID)
    loaded = replace(message, attachments=(message.attachments[0].with_content(b"%PDF"),))
    part = next(p for p in reparse(wire(loaded)).walk() if p.get_filename() == "r.pdf")
    assert part.get_content() == b"%PDF"


def test_wire_form_is_crlf_7bit_and_within_line_limits() -> None:
    message = build(
        subject="S" * 500,
        text="line one\nline two\rline three\r\n" + "long " * 400 + "\n" + "é" * 2000,
        html="<p>" + "x" * 5000 + "</p>",
        headers={"X-Long": "v" * 998},
        attachments=[FILE],
    )
    data = wire(message)
    assert data.isascii()
    assert re.search(rb"(?<!\r)\n", data) is None
    assert re.search(rb"\r(?!\n)", data) is None
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parsed = reparse(data)
    assert parsed["Subject"] == "S" * 500
    assert parsed["X-Long"] == "v" * 998
    text = unix(parsed.get_body(("plain",)).get_content())
    assert text.startswith("line one\nline two\nline three\n") and text.rstrip("\n").endswith("é" * 2000)


# ------------------------------------------------------------------------------ Message-ID


def test_message_id_is_deterministic_per_key_and_sender() -> None:
    first = make_message_id("order-42", "app@contoso.example")
    assert first == make_message_id("order-42", "App@Contoso.example")
    assert first != make_message_id("order-43", "app@contoso.example")
    assert first != make_message_id("order-42", "other@contoso.example")
    assert re.fullmatch(r"<outbox\.[0-9a-f]{32}@contoso\.example>", first)
    assert is_outbox_message_id(first) and not is_outbox_message_id("<abc@x>")
    assert "order-42" not in first  # the app's key is not shown to recipients
    with pytest.raises(ValueError):
        make_message_id("k", "no-domain")


def test_message_id_survives_the_wire_unchanged() -> None:
    mid = make_message_id("queue:abc-123", "app@contoso.example")
    parsed = reparse(to_bytes(render_mime(build(), message_id=mid)))
    assert parsed["Message-ID"] == mid


ENCODED_CRLF = "=?utf-8?q?x=0D=0ABcc:_evil@x.example?="


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": ENCODED_CRLF},
        {"headers": {"X-App": ENCODED_CRLF}},
        {"from": {"address": "app@contoso.example", "name": ENCODED_CRLF}},
        {"attachments": [{"name": ENCODED_CRLF, "contentBase64": ""}]},
        {"html": "<img src=cid:x>", "attachments": [
            {"name": "a.png", "contentBase64": "", "inline": True, "contentId": ENCODED_CRLF.replace(" ", "")}
        ]},
    ],
    ids=["subject", "custom-header", "display-name", "file-name", "content-id"],
)
def test_encoded_word_with_crlf_cannot_inject_a_header(fields: dict[str, Any]) -> None:
    # Python 3.11.7's email package decodes such a word and writes the CR LF back out
    # (CVE-2024-6923); outbox writes these headers itself.
    data = wire(build(**fields))
    assert b"\r\nBcc:" not in data and b"\nBcc:" not in data
    parsed = reparse(data)
    assert all("bcc" not in {k.lower() for k in part} for part in parsed.walk())


def test_subject_and_custom_headers_round_trip_exactly() -> None:
    values = ["plain", "a  b   c", "x" * 300, "word " * 40, "Grüße 日本", "2+2=? four", ENCODED_CRLF]
    for value in values:
        parsed = reparse(wire(build(subject=value, headers={"X-Value": value})))
        assert parsed["Subject"] == value
        assert parsed["X-Value"] == value.strip()


@pytest.mark.parametrize(
    "name",
    ["report.pdf", 'odd "quoted"; name.txt', "Ünïcödé " * 20 + ".pdf", "x" * 200 + ".bin", "=?utf-8?q?a?=.txt"],
)
def test_file_names_round_trip_and_stay_within_78_columns(name: str) -> None:
    data = wire(build(attachments=[{"name": name, "contentBase64": PDF}]))
    disposition = data[data.index(b"Content-Disposition") :].split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in disposition.split(b"\r\n"))
    part = next(p for p in reparse(data).walk() if p.get_content_disposition() == "attachment")
    assert part.get_filename() == name.strip()
