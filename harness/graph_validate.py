"""Request-body checks the fake Graph makes on a sendMail / draft body, the way Graph makes them.

Pure functions: they take the parsed JSON and say which catalog entry Graph would answer with (and the
values for its placeholders), or that the body is acceptable. The HTTP layer turns a ``Problem`` into
the exact error shape through ``shared.catalog``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Graph rejects requests over 4 MB ("The maximum request length supported is 4MB.").
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_CUSTOM_HEADERS = 5
RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients")
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"


@dataclass(frozen=True)
class Problem:
    """A catalog entry name plus the values for its ``{placeholders}``."""

    catalog: str
    fmt: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AttachmentSummary:
    name: str
    size: int
    sha256: str
    content_type: str | None
    is_inline: bool
    content_id: str | None


def _address(entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return None
    email = entry.get("emailAddress")
    if not isinstance(email, Mapping):
        return None
    address = email.get("address")
    return address if isinstance(address, str) else None


def _is_plausible_address(address: str | None) -> bool:
    if not address or any(ch.isspace() for ch in address):
        return False
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain)


def recipients(message: Mapping[str, Any]) -> dict[str, list[str]]:
    """{"to": [...], "cc": [...], "bcc": [...]} with the addresses as sent."""
    result: dict[str, list[str]] = {}
    for name, key in zip(("to", "cc", "bcc"), RECIPIENT_FIELDS, strict=True):
        entries = message.get(key) or []
        result[name] = [a for a in (_address(e) for e in entries if isinstance(entries, list)) if a]
    return result


def from_address(message: Mapping[str, Any]) -> str | None:
    """The ``from`` address, else ``sender`` (Graph uses either to decide who the mail is from)."""
    for key in ("from", "sender"):
        address = _address(message.get(key))
        if address:
            return address
    return None


def check_recipients(message: Mapping[str, Any]) -> Problem | None:
    count = 0
    for key in RECIPIENT_FIELDS:
        entries = message.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            return Problem("graph.invalid_recipients")
        for entry in entries:
            if not _is_plausible_address(_address(entry)):
                return Problem("graph.invalid_recipients")
            count += 1
    if count == 0:
        return Problem("graph.invalid_recipients")
    return None


def check_headers(message: Mapping[str, Any]) -> Problem | None:
    if "internetMessageHeaders" not in message or message["internetMessageHeaders"] is None:
        return None
    headers = message["internetMessageHeaders"]
    # An EMPTY array is rejected as well as more than five (msgraph-sdk-dotnet#2208).
    if not isinstance(headers, list) or not 1 <= len(headers) <= MAX_CUSTOM_HEADERS:
        return Problem("graph.header_count")
    for header in headers:
        name = header.get("name") if isinstance(header, Mapping) else None
        if not isinstance(name, str) or not name.lower().startswith("x-"):
            return Problem("graph.invalid_header_name", {"header": str(name)})
    return None


def decode_content_bytes(value: Any) -> bytes | None:
    """Strict base64 (Graph rejects what .NET's Convert.FromBase64String rejects)."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_attachments(message: Mapping[str, Any]) -> Problem | None:
    attachments = message.get("attachments")
    if attachments is None:
        return None
    if not isinstance(attachments, list):
        return Problem("graph.invalid_mime")
    for attachment in attachments:
        if not isinstance(attachment, Mapping):
            return Problem("graph.invalid_mime")
        kind = attachment.get("@odata.type", FILE_ATTACHMENT)
        if kind == FILE_ATTACHMENT and decode_content_bytes(attachment.get("contentBytes")) is None:
            return Problem("graph.invalid_mime")
    return None


def check_send_body(body: Any) -> Problem | None:
    """A sendMail body: ``{"message": {...}, "saveToSentItems": bool}``."""
    if not isinstance(body, Mapping):
        return Problem("graph.invalid_json")
    message = body.get("message")
    if message is None:
        # Graph builds an empty draft and then finds nobody to send it to.
        return Problem("graph.invalid_recipients")
    if not isinstance(message, Mapping):
        return Problem("graph.invalid_json")
    return check_message(message)


def check_message(message: Mapping[str, Any], *, need_recipients: bool = True) -> Problem | None:
    """The checks Graph applies to a message resource, in the order a client meets them."""
    return (
        check_headers(message)
        or check_attachments(message)
        or (check_recipients(message) if need_recipients else None)
    )


def summarize_attachments(message: Mapping[str, Any]) -> list[AttachmentSummary]:
    summaries = []
    for attachment in message.get("attachments") or []:
        content = decode_content_bytes(attachment.get("contentBytes")) or b""
        summaries.append(
            AttachmentSummary(
                name=str(attachment.get("name") or ""),
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                content_type=attachment.get("contentType"),
                is_inline=bool(attachment.get("isInline", False)),
                content_id=attachment.get("contentId"),
            )
        )
    return summaries


def save_to_sent_items(body: Mapping[str, Any]) -> bool:
    """Graph's default is true when the property is absent (or null)."""
    value = body.get("saveToSentItems")
    if value is None:
        return True
    if isinstance(value, str):
        return value.lower() != "false"
    return bool(value)
