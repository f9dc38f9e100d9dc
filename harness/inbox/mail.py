"""A delivery as a person reads it: headers, text and HTML bodies, attachments and inline parts.

Works on both shapes the fakes keep: the raw MIME of an SMTP (or Graph MIME) send, and the JSON body of
a Graph sendMail. Everything here is data; escaping is the page's job (it only ever sets textContent),
and the HTML body is served apart, in a sandboxed frame (harness/inbox/server.py).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from harness.state import Delivery

# Parsing a large MIME message takes milliseconds; the page asks for the same few over and over.
_CACHE_SIZE = 64
_SUMMARY_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class Part:
    """An attachment or inline part. ``data`` is None when the fake did not keep the bytes (a Graph
    upload session's attachment: only its summary is recorded)."""

    index: int
    name: str
    content_type: str
    size: int
    content_id: str | None = None
    inline: bool = False
    data: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "contentType": self.content_type, "size": self.size,
                "contentId": self.content_id, "inline": self.inline, "kept": self.data is not None}


@dataclass(frozen=True)
class MailView:
    headers: tuple[tuple[str, str], ...]
    from_: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    text: str | None
    html: str | None
    parts: tuple[Part, ...]
    source: str
    source_kind: str  # "mime" or "graph-json"

    def part(self, index: int) -> Part | None:
        return next((p for p in self.parts if p.index == index), None)

    def by_content_id(self) -> dict[str, Part]:
        return {p.content_id.strip("<>").lower(): p for p in self.parts if p.content_id}

    def to_dict(self) -> dict[str, Any]:
        return {"headers": [[k, v] for k, v in self.headers], "from": self.from_, "to": list(self.to),
                "cc": list(self.cc), "bcc": list(self.bcc), "text": self.text, "hasHtml": self.html is not None,
                "attachments": [p.to_dict() for p in self.parts], "sourceKind": self.source_kind}


class _Lru:
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_VIEWS = _Lru(_CACHE_SIZE)
_SUMMARIES = _Lru(_SUMMARY_CACHE_SIZE)


def view(delivery: Delivery) -> MailView:
    cached = _VIEWS.get(delivery.id)
    if cached is None:
        try:
            cached = _mime_view(delivery) if delivery.raw_mime is not None else _graph_view(delivery)
        except Exception as exc:  # a message no parser expected still gets a page: its source
            cached = _unreadable(delivery, exc)
        _VIEWS.put(delivery.id, cached)
    return cached


def _unreadable(delivery: Delivery, exc: Exception) -> MailView:
    if delivery.raw_mime is not None:
        source, kind = delivery.raw_mime.decode("utf-8", errors="replace"), "mime"
    else:
        source, kind = json.dumps(delivery.graph_json, indent=2, ensure_ascii=False, default=str), "graph-json"
    return MailView(headers=(("X-Inbox-Unreadable", f"{type(exc).__name__}: {exc}"),), from_=delivery.sender,
                    to=delivery.recipients, cc=(), bcc=(), text=None, html=None, parts=(), source=source,
                    source_kind=kind)


def summary(delivery: Delivery, app_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One row of the list: what a person scans for (no bodies)."""
    cached = _SUMMARIES.get(delivery.id)
    if cached is None:
        mail = view(delivery)
        size = len(delivery.raw_mime) if delivery.raw_mime is not None else len(mail.source.encode())
        extra = delivery.extra or {}
        cached = {
            "id": delivery.id,
            "time": delivery.time,
            "transport": delivery.transport,
            "mailbox": delivery.mailbox,
            "appId": delivery.app_id,
            "authType": delivery.auth_type,
            "user": delivery.user or extra.get("user") or extra.get("upn"),
            "from": mail.from_ or delivery.sender,
            "to": list(mail.to),
            "cc": list(mail.cc),
            "bcc": list(mail.bcc),
            "subject": delivery.subject,
            "size": size,
            "attachments": [p.name for p in mail.parts if not p.inline],
            "messageId": delivery.message_id,
            "requestId": delivery.request_id,
            "savedToSentItems": delivery.saved_to_sent_items,
        }
        _SUMMARIES.put(delivery.id, cached)
    out = dict(cached)
    out["appName"] = (app_names or {}).get(delivery.app_id.lower()) if delivery.app_id else None
    return out


def matches(delivery: Delivery, text: str) -> bool:
    """The list's text filter: subject, addresses and ids, case-insensitive. Reads only what the fake
    recorded (no MIME parsing), so filtering 10,000 deliveries stays fast."""
    needle = text.lower()
    haystack = (delivery.subject, delivery.sender, delivery.mailbox, delivery.message_id, delivery.id,
                delivery.app_id, *delivery.recipients)
    return any(needle in h.lower() for h in haystack if h)


# -- MIME -------------------------------------------------------------------------------------------------


def _mime_view(delivery: Delivery) -> MailView:
    raw = delivery.raw_mime or b""
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    headers = tuple((k, _header_text(v)) for k, v in message.items())
    to = _addresses(message.get_all("To", []))
    cc = _addresses(message.get_all("Cc", []))
    listed = {a.lower() for a in (*to, *cc)}
    bcc = tuple(r for r in delivery.recipients if r.lower() not in listed)
    text: str | None = None
    html: str | None = None
    parts: list[Part] = []
    for leaf in message.walk():
        if leaf.is_multipart():
            continue
        assert isinstance(leaf, EmailMessage)
        ctype = leaf.get_content_type()
        disposition = leaf.get_content_disposition()
        if disposition != "attachment" and ctype in ("text/plain", "text/html") and not leaf.get_filename():
            body = _text_of(leaf)
            if ctype == "text/plain" and text is None:
                text = body
                continue
            if ctype == "text/html" and html is None:
                html = body
                continue
        data = leaf.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        content_id = leaf.get("Content-ID")
        parts.append(Part(
            index=len(parts), name=leaf.get_filename() or _fallback_name(ctype, len(parts)), content_type=ctype,
            size=len(payload), content_id=str(content_id).strip() if content_id else None,
            inline=disposition == "inline" or (disposition is None and content_id is not None), data=payload,
        ))
    return MailView(headers=headers, from_=_header_text(message.get("From", "")), to=to, cc=cc, bcc=bcc,
                    text=text, html=html, parts=tuple(parts), source=raw.decode("utf-8", errors="replace"),
                    source_kind="mime")


def _header_text(value: object) -> str:
    # A header the policy could not parse still has its raw text; never fail the page on one.
    try:
        return str(value)
    except Exception:
        return repr(value)


def _addresses(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(a for _, a in email.utils.getaddresses([_header_text(v) for v in values]) if a)


def _text_of(leaf: EmailMessage) -> str:
    try:
        content = leaf.get_content()
    except (LookupError, ValueError):  # unknown charset, bad transfer encoding
        data = leaf.get_payload(decode=True)
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else ""
    return content if isinstance(content, str) else content.decode("utf-8", errors="replace")


def _fallback_name(content_type: str, index: int) -> str:
    return f"part-{index + 1}.{content_type.split('/')[-1] or 'bin'}"


# -- Graph JSON ----------------------------------------------------------------------------------------


def _graph_view(delivery: Delivery) -> MailView:
    body: Mapping[str, Any] = delivery.graph_json or {}
    message = body.get("message") if isinstance(body.get("message"), Mapping) else body
    assert isinstance(message, Mapping)
    extra = delivery.extra or {}

    def entries(key: str) -> tuple[str, ...]:
        return tuple(_graph_address(e) for e in message.get(key) or () if _graph_address(e))

    sender = message.get("from")
    from_ = _graph_display(sender) if isinstance(sender, Mapping) else delivery.sender or delivery.mailbox
    to, cc, bcc = entries("toRecipients"), entries("ccRecipients"), entries("bccRecipients")

    def shown(key: str) -> str:
        return ", ".join(_graph_display(e) for e in message.get(key) or () if isinstance(e, Mapping))

    headers: list[tuple[str, str]] = [("From", from_), ("To", shown("toRecipients"))]
    if cc:
        headers.append(("Cc", shown("ccRecipients")))
    if bcc:
        headers.append(("Bcc", shown("bccRecipients")))
    headers.append(("Subject", str(message.get("subject") or "")))
    if delivery.message_id:
        headers.append(("Message-ID", delivery.message_id))
    for h in message.get("internetMessageHeaders") or ():
        if isinstance(h, Mapping):
            headers.append((str(h.get("name", "")), str(h.get("value", ""))))
    content = message.get("body") if isinstance(message.get("body"), Mapping) else {}
    assert isinstance(content, Mapping)
    kind = str(content.get("contentType") or "text").lower()
    text_value = str(content.get("content") or "")
    parts: list[Part] = []
    for a in message.get("attachments") or ():
        if not isinstance(a, Mapping):
            continue
        data = _b64(a.get("contentBytes"))
        parts.append(Part(index=len(parts), name=str(a.get("name") or _fallback_name("octet-stream", len(parts))),
                          content_type=str(a.get("contentType") or "application/octet-stream"),
                          size=len(data) if data is not None else int(a.get("size") or 0),
                          content_id=str(a["contentId"]) if a.get("contentId") else None,
                          inline=bool(a.get("isInline")), data=data))
    if not parts:
        # Attachments uploaded in a session are not in the JSON: list them from the fake's summary.
        for a in extra.get("attachments") or ():
            if isinstance(a, Mapping):
                parts.append(Part(index=len(parts), name=str(a.get("name") or ""),
                                  content_type=str(a.get("contentType") or "application/octet-stream"),
                                  size=int(a.get("size") or 0),
                                  content_id=str(a["contentId"]) if a.get("contentId") else None,
                                  inline=bool(a.get("isInline"))))
    source = json.dumps(body, indent=2, ensure_ascii=False)
    return MailView(headers=tuple(headers), from_=from_, to=to, cc=cc, bcc=bcc,
                    text=text_value if kind != "html" else None, html=text_value if kind == "html" else None,
                    parts=tuple(parts), source=source, source_kind="graph-json")


def _graph_address(entry: object) -> str:
    if not isinstance(entry, Mapping):
        return ""
    inner = entry.get("emailAddress")
    return str(inner.get("address") or "") if isinstance(inner, Mapping) else ""


def _graph_display(entry: Mapping[str, Any]) -> str:
    inner = entry.get("emailAddress")
    if not isinstance(inner, Mapping):
        return ""
    name, address = str(inner.get("name") or ""), str(inner.get("address") or "")
    return f'"{name}" <{address}>' if name else address


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return None
