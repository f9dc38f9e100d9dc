"""Property tests for the renderers: any valid message renders to MIME that re-parses with the
same headers (and no Bcc), to Graph JSON that carries the same fields, and no CR/LF in any
field ever becomes an extra header."""

from __future__ import annotations

import email
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.message import InvalidMessage, Message, parse_message
from shared.message_id import make_message_id
from shared.render_graph import render_send_mail
from shared.render_mime import envelope_recipients, render_mime, to_bytes
from tests.unit.message_strategies import valid_bodies

PROPERTY = settings(max_examples=80, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def loaded(message: Message) -> Message:
    """Blob attachments loaded, as the transport does before rendering."""
    return replace(
        message,
        attachments=tuple(a.with_content(b"blob:" + a.name.encode()) if a.blob else a for a in message.attachments),
    )


def squash(text: str) -> str:
    """Header values compared modulo folding whitespace."""
    return " ".join(text.split())


def nospace(text: str) -> str:
    return "".join(text.split())


def expected_header_names(message: Message) -> set[str]:
    names = {"from", "subject", "date", "message-id", "mime-version", "content-type"}
    names |= {n for n, present in (("to", message.to), ("cc", message.cc), ("reply-to", message.reply_to)) if present}
    if message.importance:
        names |= {"importance", "x-priority"}
    names |= {n.lower() for n, _ in message.headers}
    return names


def render_and_reparse(message: Message) -> tuple[bytes, EmailMessage]:
    mid = make_message_id(message.id or "k", message.sender.address)
    data = to_bytes(render_mime(message, message_id=mid, date=WHEN))
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return data, parsed


def check_mime(message: Message) -> None:
    data, parsed = render_and_reparse(message)
    assert data.isascii()
    assert re.search(rb"(?<!\r)\n", data) is None and re.search(rb"\r(?!\n)", data) is None
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert not parsed.defects
    names = [k.lower() for k in parsed]
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    assert set(names) - {"content-transfer-encoding"} == expected_header_names(message)
    assert "bcc" not in names
    assert squash(parsed["Subject"]) == squash(message.subject)
    for name, value in message.headers:
        assert squash(parsed[name]) == squash(value)
    for header, addresses in (("From", (message.sender,)), ("To", message.to), ("Cc", message.cc), ("Reply-To", message.reply_to)):
        if not addresses:
            continue
        got = parsed[header].addresses
        assert [a.addr_spec.lower() for a in got] == [a.address.lower() for a in addresses]
        # Python's parser keeps the folding space between adjacent encoded words in a display
        # name (RFC 2047 says to drop it; Outlook does), so names are compared without spaces.
        assert [nospace(a.display_name) for a in got] == [nospace(a.name or "") for a in addresses]
    envelope = {a.lower() for a in envelope_recipients(message)}
    assert envelope == {a.key() for a in message.recipients}
    assert {a.key() for a in message.bcc} <= envelope


@PROPERTY
@given(valid_bodies())
def test_rendered_mime_reparses_with_the_same_headers_and_no_bcc(body: dict[str, Any]) -> None:
    check_mime(loaded(parse_message(body)))


@PROPERTY
@given(valid_bodies())
def test_rendered_mime_keeps_every_attachment(body: dict[str, Any]) -> None:
    message = loaded(parse_message(body))
    _, parsed = render_and_reparse(message)
    parts = [p for p in parsed.walk() if not p.is_multipart() and p.get_filename() is not None]
    assert sorted((p.get_filename(), p.get_payload(decode=True)) for p in parts) == sorted(
        (a.name, a.content) for a in message.attachments
    )


@PROPERTY
@given(valid_bodies())
def test_graph_json_carries_the_same_fields(body: dict[str, Any]) -> None:
    message = loaded(parse_message(body))
    mid = make_message_id("k", message.sender.address)
    try:
        rendered = render_send_mail(message, internet_message_id=mid)
    except InvalidMessage:
        assert len(message.headers) > 5
        return
    m = json.loads(json.dumps(rendered))["message"]
    assert m["subject"] == message.subject
    assert m["internetMessageId"] == mid
    for key, addresses in (("toRecipients", message.to), ("ccRecipients", message.cc),
                           ("bccRecipients", message.bcc), ("replyTo", message.reply_to)):
        assert [r["emailAddress"]["address"] for r in m.get(key, [])] == [a.address for a in addresses]
        assert [r["emailAddress"].get("name") for r in m.get(key, [])] == [a.name for a in addresses]
    assert ("internetMessageHeaders" in m) == bool(message.headers)
    assert len(m.get("attachments", [])) == len(message.attachments)
    assert rendered["saveToSentItems"] is (message.save_to_sent_items is not False)


# ------------------------------------------------------------------------- header injection

INJECTIONS = st.one_of(
    st.sampled_from([
        "x\r\nBcc: evil@x.example",
        "x\nBcc: evil@x.example",
        "x\rBcc: evil@x.example",
        "x\r\n\r\nbody",
        "x\x0bBcc: evil@x.example",
        "x\x0cBcc: evil@x.example",
        "x\x85Bcc: evil@x.example",
        "x\u2028Bcc: evil@x.example",
        "=?utf-8?q?x=0D=0ABcc:_evil@x.example?=",
        "x\r\n Bcc: folded@x.example",
    ]),
    st.lists(
        st.sampled_from([*"ab :@.\r\n\t\x0b\x0c\x1c\x85\u2028\u2029=?", "Bcc", "X-Evil", "\r\n", "é"]), max_size=12
    ).map("".join),
)

SLOTS = {
    "subject": lambda body, v: body.__setitem__("subject", v),
    "from.name": lambda body, v: body.__setitem__("from", {"address": "app@contoso.example", "name": v}),
    "to[0].name": lambda body, v: body.__setitem__("to", [{"address": "u@x.example", "name": v}]),
    "to[0]": lambda body, v: body.__setitem__("to", [f"{v} <u@x.example>"]),
    "headers.X-App": lambda body, v: body.__setitem__("headers", {"X-App": v}),
    "attachments[0].name": lambda body, v: body.__setitem__("attachments", [{"name": v, "contentBase64": ""}]),
    "attachments[0].contentId": lambda body, v: body.__setitem__(
        "attachments", [{"name": "a.png", "contentBase64": "", "contentId": v, "inline": True}]
    ),
}


@settings(max_examples=300, deadline=2000)
@given(st.sampled_from(sorted(SLOTS)), INJECTIONS)
def test_no_field_can_inject_a_header(slot: str, value: str) -> None:
    body: dict[str, Any] = {"from": "app@contoso.example", "to": ["u@x.example"], "html": "<img src=cid:a>"}
    SLOTS[slot](body, value)
    try:
        message = parse_message(body)
    except InvalidMessage as exc:
        # refused, and the refusal names the field that carried the payload
        assert [e.field for e in exc.errors] == [slot], str(exc)
        return
    check_mime(message)
    data, parsed = render_and_reparse(message)
    for part in parsed.walk():
        assert "bcc" not in {k.lower() for k in part}
        assert "x-evil" not in {k.lower() for k in part}
    assert b"\r\nBcc:" not in data and b"\r\nX-Evil" not in data
