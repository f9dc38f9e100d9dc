"""A validated message as MIME for SMTP submission (``email.policy.SMTP``: CRLF, 78 columns,
RFC 2047 for non-ASCII header text, RFC 2231 for non-ASCII file names).

Structure, innermost first:
- text only -> text/plain; html only -> text/html; both -> multipart/alternative(text, html);
- inline attachments with a contentId (and an html body to reference them) ->
  multipart/related(html, inline parts...) in place of the html part;
- every other attachment -> multipart/mixed(body, attachments...).

Bcc never appears in the headers: the SMTP envelope carries those recipients
(``envelope_recipients``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage, MIMEPart
from email.utils import encode_rfc2231, format_datetime

from shared.addresses import format_address_header
from shared.message import Attachment, Message
from shared.message_id import make_message_id

__all__ = [
    "content_disposition",
    "envelope_recipients",
    "make_message_id",
    "render_mime",
    "to_bytes",
    "unstructured_header",
]

# 7bit: text parts with non-ASCII go out quoted-printable or base64, never as raw 8-bit, so the
# message needs no 8BITMIME from whatever relay it passes through.
# refold_source="none": address headers are folded by format_address_header and stored raw;
# the policy must emit them as they are (every other header is still folded by the policy).
_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")

# Outlook reads Importance; many other clients read X-Priority. Both are sent.
_IMPORTANCE_HEADERS = {
    "high": ("high", "1 (Highest)"),
    "normal": ("normal", "3 (Normal)"),
    "low": ("low", "5 (Lowest)"),
}


_MAX_LINE = 78
_ENCODED_WORD_START = "=?"


def _fold_words(header_name: str, value: str) -> str:
    """ASCII text folded at spaces (a fold only inserts CRLF before an existing space, so
    unfolding restores the value exactly)."""
    lines: list[str] = []
    current = ""
    width = len(header_name) + 2
    for index, word in enumerate(value.split(" ")):
        if index == 0:
            current, width = word, width + len(word)
        elif width + 1 + len(word) <= _MAX_LINE or not word:
            current += " " + word
            width += 1 + len(word)
        else:
            lines.append(current)
            current = " " + word
            width = len(current)
    lines.append(current)
    return "\r\n".join(lines)


def unstructured_header(header_name: str, value: str) -> str:
    """A free-text header value (Subject, X-...) in its wire form, ASCII and folded.

    Plain ASCII stays readable; anything else (non-ASCII, words too long to fold, or text that
    looks like an RFC 2047 encoded word) is encoded by us. The value is written raw afterwards,
    never re-parsed by ``email.headerregistry``: Python 3.11.7's header parser decodes an encoded
    word such as ``=?utf-8?q?x=0D=0ABcc:_a@b?=`` in a value it is given and writes the decoded
    CR LF back out, which turns a custom header into an injected Bcc (CVE-2024-6923).
    """
    if value.isascii() and _ENCODED_WORD_START not in value and all(len(w) <= _MAX_LINE - 2 for w in value.split()):
        return _fold_words(header_name, value)
    return Header(value, "utf-8", maxlinelen=_MAX_LINE, header_name=header_name).encode(linesep="\r\n")


_PLAIN_FILENAME = re.compile(r"[A-Za-z0-9 !#$%&'()*+,.;=@\[\]^_`{|}~-]{1,60}\Z")
_PERCENT_TOKEN = re.compile(r"%[0-9A-Fa-f]{2}|.")


def content_disposition(disposition: str, filename: str) -> str:
    """``attachment; filename=...`` in wire form. Plain short ASCII names are quoted; anything
    else uses RFC 2231 (``filename*=utf-8''...``, split into ``filename*N*`` continuations so
    no line passes 78 columns). Written raw for the same reason as unstructured_header."""
    if _PLAIN_FILENAME.match(filename) and _ENCODED_WORD_START not in filename:
        return f'{disposition}; filename="{filename}"'
    encoded = encode_rfc2231(filename, "utf-8")  # utf-8''percent-encoded
    chunks: list[str] = []
    current = ""
    for token in _PERCENT_TOKEN.findall(encoded):
        if len(current) + len(token) > 60:
            chunks.append(current)
            current = ""
        current += token
    chunks.append(current)
    if len(chunks) == 1:
        return f"{disposition};\r\n filename*={chunks[0]}"
    params = [f" filename*{n}*={chunk}" for n, chunk in enumerate(chunks)]
    return f"{disposition};\r\n" + ";\r\n".join(params)


def envelope_recipients(message: Message) -> list[str]:
    """RCPT TO addresses: to + cc + bcc, first occurrence kept, duplicates (case-insensitive)
    removed so that nobody receives two copies."""
    seen: set[str] = set()
    result: list[str] = []
    for address in message.recipients:
        key = address.key()
        if key not in seen:
            seen.add(key)
            result.append(address.address)
    return result


def _require_content(index: int, attachment: Attachment) -> bytes:
    if attachment.content is None:
        raise ValueError(
            f"attachments[{index}] ({attachment.name!r}) refers to blob {attachment.blob!r} that was "
            "not loaded: load it with Attachment.with_content() before rendering"
        )
    return attachment.content


def _text_part(content: str, subtype: str, target: MIMEPart | None = None) -> MIMEPart:
    part = target if target is not None else MIMEPart(policy=_POLICY)
    part.set_content(content, subtype=subtype, charset="utf-8")
    return part


def _attachment_part(index: int, attachment: Attachment, disposition: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    maintype, _, subtype = attachment.content_type.partition("/")
    if maintype == "message":
        # message/* parts may not be base64-encoded (RFC 2046) and the stdlib writes them with
        # bare LFs; as an opaque file they arrive intact and open by their file name.
        maintype, subtype = "application", "octet-stream"
    part.set_content(_require_content(index, attachment), maintype, subtype)
    part.set_raw("Content-Disposition", content_disposition(disposition, attachment.name))
    if attachment.content_id:
        # Raw, for the same reason as unstructured_header: the id is never re-parsed.
        part.set_raw("Content-ID", f"<{attachment.content_id}>")
    return part


def _multipart(subtype: str, parts: Sequence[MIMEPart], target: MIMEPart | None = None) -> MIMEPart:
    container = target if target is not None else MIMEPart(policy=_POLICY)
    container["Content-Type"] = f"multipart/{subtype}"
    for part in parts:
        container.attach(part)
    return container


def _build_body(message: Message, target: EmailMessage) -> None:
    related = [
        (i, a)
        for i, a in enumerate(message.attachments)
        if a.inline and a.content_id and message.html is not None
    ]
    related_indexes = {i for i, _ in related}
    mixed = [(i, a) for i, a in enumerate(message.attachments) if i not in related_indexes]
    # Check every attachment before building anything, so the error names the first one missing.
    for index, attachment in enumerate(message.attachments):
        _require_content(index, attachment)

    def html_node(into: MIMEPart | None) -> MIMEPart:
        assert message.html is not None
        if not related:
            return _text_part(message.html, "html", into)
        parts = [_text_part(message.html, "html")]
        parts += [_attachment_part(i, a, "inline") for i, a in related]
        # RFC 2387 requires the type parameter: the root part's type.
        return _multipart('related; type="text/html"', parts, into)

    def body_node(into: MIMEPart | None) -> MIMEPart:
        if message.html is None:
            return _text_part(message.text or "", "plain", into)
        if message.text is None:
            return html_node(into)
        return _multipart("alternative", [_text_part(message.text, "plain"), html_node(None)], into)

    if not mixed:
        body_node(target)
        return
    parts = [body_node(None)]
    parts += [_attachment_part(i, a, "inline" if a.inline else "attachment") for i, a in mixed]
    _multipart("mixed", parts, target)


def render_mime(message: Message, *, message_id: str, date: datetime | None = None) -> EmailMessage:
    """The message as an EmailMessage ready for ``to_bytes``; raises ValueError if a blob
    attachment has not been loaded."""
    msg = EmailMessage(policy=_POLICY)
    for header, addresses in (
        ("From", (message.sender,)),
        ("To", message.to),
        ("Cc", message.cc),
        ("Reply-To", message.reply_to),
    ):
        if addresses:
            msg.set_raw(header, format_address_header(header, addresses))
    msg.set_raw("Subject", unstructured_header("Subject", message.subject))
    when = date or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = message_id
    if message.importance is not None:
        importance, priority = _IMPORTANCE_HEADERS[message.importance]
        msg["Importance"] = importance
        msg["X-Priority"] = priority
    for name, value in message.headers:
        msg.set_raw(name, unstructured_header(name, value))
    msg["MIME-Version"] = "1.0"
    _build_body(message, msg)
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """Wire form for DATA: CRLF line endings, 7-bit clean, lines within 998 octets."""
    return msg.as_bytes(policy=_POLICY)
