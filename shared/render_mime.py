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

from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

from shared.message import Attachment, Message
from shared.message_id import make_message_id

__all__ = ["envelope_recipients", "make_message_id", "render_mime", "to_bytes"]

_POLICY = policy.SMTP

# Outlook reads Importance; many other clients read X-Priority. Both are sent.
_IMPORTANCE_HEADERS = {
    "high": ("high", "1 (Highest)"),
    "normal": ("normal", "3 (Normal)"),
    "low": ("low", "5 (Lowest)"),
}


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
    part.set_content(
        _require_content(index, attachment),
        maintype,
        subtype,
        disposition=disposition,
        filename=attachment.name,
        cid=f"<{attachment.content_id}>" if attachment.content_id else None,
    )
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
    msg["From"] = message.sender.to_header()
    if message.to:
        msg["To"] = [a.to_header() for a in message.to]
    if message.cc:
        msg["Cc"] = [a.to_header() for a in message.cc]
    if message.reply_to:
        msg["Reply-To"] = [a.to_header() for a in message.reply_to]
    msg["Subject"] = message.subject
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
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    _build_body(message, msg)
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """Wire form for DATA: CRLF line endings, 7-bit clean, lines within 998 octets."""
    return msg.as_bytes(policy=_POLICY)
