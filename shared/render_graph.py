"""A validated message as Microsoft Graph JSON: the ``sendMail`` body, the draft for the
large-attachment path, and the size plan that picks between them.

What Graph receives, and why:
- addresses as ``{"emailAddress": {"address", "name"}}`` with the name only when given, never a
  formatted ``Name <addr>`` string (a name containing ``@`` then breaks the address);
- ``body``: the HTML when there is one (Graph stores one body), else the text;
- ``internetMessageHeaders`` only when the message has custom headers: an empty array is a 400,
  and so are more than 5;
- ``internetMessageId`` set to outbox's Message-ID, so an ambiguous send can be found in Sent
  Items on the next attempt (see docs/message-format.md for what is known about Graph keeping it);
- ``saveToSentItems`` always explicit (default true), because Graph SDKs disagree on the default;
- a Sent Items copy of an SMTP submission (``render_sent_copy``) carries ``PidTagMessageFlags``
  (``Integer 0x0E07``) without ``MSGFLAG_UNSENT``: Exchange makes an item a draft unless that flag is
  given when it is created, and it cannot be changed afterwards (PidTagMessageFlags canonical property,
  MS-OXCMSG 2.2.1.6; microsoftgraph/microsoft-graph-docs#14829).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from shared.addresses import Address
from shared.message import Attachment, Message, validate_for_transport

__all__ = [
    "LARGE_ATTACHMENT_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "GraphSendPlan",
    "SizeRefusal",
    "estimate_request_bytes",
    "exchange_size",
    "file_attachment",
    "plan_send",
    "recipient",
    "render_draft_message",
    "render_send_mail",
    "render_sent_copy",
    "size_refusal",
    "to_json_bytes",
    "upload_session_body",
]

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # "The maximum request length supported is 4MB." (413)
LARGE_ATTACHMENT_BYTES = 3 * 1024 * 1024  # Graph: attachments from 3 MB go through an upload session
# Exchange Online's ceiling above every mailbox's MaxSendSize: 150 MB (outlook-large-attachments.md), in
# Exchange's binary megabytes (SMTP's EHLO advertises it as SIZE 157286400).
MAX_MESSAGE_BYTES = 150 * 1024 * 1024

_FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"
_LONGEST_MESSAGE_ID = "<" + "x" * 40 + "@" + "x" * 253 + ">"  # make_message_id with a 253-char domain


def recipient(address: Address) -> dict[str, dict[str, str]]:
    email_address = {"address": address.address}
    if address.name:
        email_address["name"] = address.name
    return {"emailAddress": email_address}


def _content(index: int, attachment: Attachment) -> bytes:
    if attachment.content is None:
        raise ValueError(
            f"attachments[{index}] ({attachment.name!r}) refers to blob {attachment.blob!r} that was "
            "not loaded: load it with Attachment.with_content() before rendering"
        )
    return attachment.content


def _attachment_json(attachment: Attachment, content_bytes: str) -> dict[str, object]:
    result: dict[str, object] = {
        "@odata.type": _FILE_ATTACHMENT,
        "name": attachment.name,
        "contentType": attachment.content_type,
        "contentBytes": content_bytes,
        "isInline": attachment.inline,
    }
    if attachment.content_id is not None:
        result["contentId"] = attachment.content_id
    return result


def file_attachment(attachment: Attachment, *, index: int = 0) -> dict[str, object]:
    """One ``fileAttachment`` (also the body of POST /messages/{id}/attachments)."""
    encoded = base64.b64encode(_content(index, attachment)).decode("ascii")
    return _attachment_json(attachment, encoded)


def upload_session_body(attachment: Attachment) -> dict[str, object]:
    """Body of POST .../messages/{id}/attachments/createUploadSession for one attachment."""
    if attachment.size is None:
        raise ValueError(f"attachment {attachment.name!r} has no known size: load its content first")
    item: dict[str, object] = {
        "attachmentType": "file",
        "name": attachment.name,
        "size": attachment.size,
        "contentType": attachment.content_type,
        "isInline": attachment.inline,
    }
    if attachment.content_id is not None:
        item["contentId"] = attachment.content_id
    return {"AttachmentItem": item}


def _message_resource(
    message: Message,
    internet_message_id: str,
    exclude_attachments: Collection[int],
    *,
    placeholder_content: bool = False,
) -> dict[str, object]:
    if not (internet_message_id.startswith("<") and internet_message_id.endswith(">")):
        raise ValueError(f"internet_message_id must look like <id@domain>, got {internet_message_id!r}")
    validate_for_transport(message, "graph")
    resource: dict[str, object] = {
        "subject": message.subject,
        "body": (
            {"contentType": "HTML", "content": message.html}
            if message.html is not None
            else {"contentType": "Text", "content": message.text or ""}
        ),
        "from": recipient(message.sender),
    }
    for key, addresses in (
        ("toRecipients", message.to),
        ("ccRecipients", message.cc),
        ("bccRecipients", message.bcc),
        ("replyTo", message.reply_to),
    ):
        if addresses:
            resource[key] = [recipient(a) for a in addresses]
    if message.importance is not None:
        resource["importance"] = message.importance
    if message.headers:
        resource["internetMessageHeaders"] = [{"name": n, "value": v} for n, v in message.headers]
    resource["internetMessageId"] = internet_message_id
    attachments = []
    for index, attachment in enumerate(message.attachments):
        if index in exclude_attachments:
            continue
        if placeholder_content:
            attachments.append(_attachment_json(attachment, ""))
        else:
            attachments.append(file_attachment(attachment, index=index))
    if attachments:
        resource["attachments"] = attachments
    return resource


def render_send_mail(
    message: Message, *, internet_message_id: str, save_to_sent_items: bool | None = None
) -> dict[str, object]:
    """The body of POST /users/{from}/sendMail. ``save_to_sent_items`` overrides the message's
    ``saveToSentItems``; with neither, it is True. Raises InvalidMessage for more than 5 custom
    headers and ValueError for a blob attachment that was not loaded."""
    if save_to_sent_items is None:
        save_to_sent_items = True if message.save_to_sent_items is None else message.save_to_sent_items
    return {
        "message": _message_resource(message, internet_message_id, ()),
        "saveToSentItems": bool(save_to_sent_items),
    }


def render_draft_message(
    message: Message, *, internet_message_id: str, exclude_attachments: Collection[int] = frozenset()
) -> dict[str, object]:
    """The body of POST /users/{from}/messages (a draft, sent later with /send, which always
    saves to Sent Items). Attachments whose indexes are excluded are added separately."""
    return _message_resource(message, internet_message_id, exclude_attachments)


# PidTagMessageFlags: MSGFLAG_READ (0x1), MSGFLAG_UNSENT (0x8) clear: read, and not a draft.
MESSAGE_FLAGS_PROPERTY = "Integer 0x0E07"
SENT_COPY_FLAGS = 0x1
MSGFLAG_UNSENT = 0x8
# PidTagClientSubmitTime and PidTagMessageDeliveryTime: Graph's sentDateTime and receivedDateTime, which
# Outlook sorts Sent Items by (otherwise the copy would show the time it was saved).
SUBMIT_TIME_PROPERTY = "SystemTime 0x0039"
DELIVERY_TIME_PROPERTY = "SystemTime 0x0E06"


def render_sent_copy(message: Message, *, internet_message_id: str, sent_at: datetime) -> dict[str, object]:
    """The body of POST /users/{from}/mailFolders/sentitems/messages: the SMTP submission as a sent item
    (not a draft, never delivered to anyone). Custom headers are left out: Graph takes at most 5 and a
    copy is for people reading Sent Items. Attachments must be loaded."""
    resource = _message_resource(replace(message, headers=()), internet_message_id, ())
    stamp = sent_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    resource["singleValueExtendedProperties"] = [
        {"id": MESSAGE_FLAGS_PROPERTY, "value": str(SENT_COPY_FLAGS)},
        {"id": SUBMIT_TIME_PROPERTY, "value": stamp},
        {"id": DELIVERY_TIME_PROPERTY, "value": stamp},
    ]
    return resource


def to_json_bytes(body: dict[str, object]) -> bytes:
    """Compact UTF-8 JSON, the encoding estimate_request_bytes bounds."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------------- size planning


def _encoded_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _sizes(message: Message) -> list[int]:
    sizes = []
    for index, attachment in enumerate(message.attachments):
        if attachment.size is None:
            raise ValueError(
                f"attachments[{index}] ({attachment.name!r}) has no known size: load blob "
                "attachments (Attachment.with_content) before planning the send"
            )
        sizes.append(attachment.size)
    return sizes


def estimate_request_bytes(
    message: Message,
    *,
    exclude_attachments: Collection[int] = frozenset(),
    draft: bool = False,
    internet_message_id: str = _LONGEST_MESSAGE_ID,
) -> int:
    """Size in bytes of the sendMail body (or, with ``draft``, the draft body) as serialised
    by to_json_bytes, computed without base64-encoding the attachments. By default it assumes
    the longest possible Message-ID, so it is an upper bound for any real one."""
    sizes = _sizes(message)
    resource = _message_resource(message, internet_message_id, exclude_attachments, placeholder_content=True)
    body: dict[str, object] = resource if draft else {"message": resource, "saveToSentItems": False}
    base = len(to_json_bytes(body))
    return base + sum(_encoded_length(s) for i, s in enumerate(sizes) if i not in exclude_attachments)


@dataclass(frozen=True, slots=True)
class GraphSendPlan:
    """How to send through Graph. ``use_draft`` False: one sendMail. True: create a draft
    (render_draft_message excluding session + posted attachments), add ``posted_attachments``
    one POST each, upload ``session_attachments`` through upload sessions, then /send."""

    use_draft: bool
    session_attachments: tuple[int, ...] = ()
    posted_attachments: tuple[int, ...] = ()
    estimated_bytes: int = 0

    @property
    def excluded_from_draft(self) -> frozenset[int]:
        return frozenset(self.session_attachments) | frozenset(self.posted_attachments)


def plan_send(
    message: Message,
    *,
    large_attachment_bytes: int = LARGE_ATTACHMENT_BYTES,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> GraphSendPlan:
    """Pick sendMail (request within ``max_request_bytes`` and no attachment of
    ``large_attachment_bytes`` or more) or the draft path, and where each attachment goes."""
    sizes = _sizes(message)
    large = {i for i, s in enumerate(sizes) if s >= large_attachment_bytes}
    whole = estimate_request_bytes(message)
    if not large and whole <= max_request_bytes:
        return GraphSendPlan(use_draft=False, estimated_bytes=whole)

    session = set(large)
    posted: set[int] = set()
    for index in sorted(set(range(len(sizes))) - session, key=lambda i: sizes[i], reverse=True):
        if estimate_request_bytes(message, exclude_attachments=session | posted, draft=True) <= max_request_bytes:
            break
        # Too big for one POST of its own as well: it needs an upload session despite its size.
        alone = len(json.dumps(_attachment_json(message.attachments[index], ""))) + _encoded_length(sizes[index])
        (session if alone > max_request_bytes else posted).add(index)
    # If the draft is still too big (the text alone is over the limit), Graph answers 413 and the
    # classifier makes that a permanent size error: nothing better can be planned here.
    draft_bytes = estimate_request_bytes(message, exclude_attachments=session | posted, draft=True)
    return GraphSendPlan(
        use_draft=True,
        session_attachments=tuple(sorted(session)),
        posted_attachments=tuple(sorted(posted)),
        estimated_bytes=draft_bytes,
    )


# ------------------------------------------------------------------------- Exchange's size limits


def exchange_size(message: Message) -> int:
    """The message's size as Exchange counts it against MaxSendSize and the 150 MB ceiling: the MIME size,
    where each attachment travels base64-encoded (4 * ceil(n / 3) bytes, "approximately 33%" more:
    Microsoft, "Message size limits in Exchange Server"), plus the subject and the body Graph gets, in
    UTF-8. Headers and MIME boundaries (a few hundred bytes) are left out. Attachments need a known size."""
    body = message.html if message.html is not None else (message.text or "")
    return len(f"{message.subject or ''}{body}".encode()) + sum(_encoded_length(s) for s in _sizes(message))


@dataclass(frozen=True, slots=True)
class SizeRefusal:
    """A message Exchange will refuse for its size, known before any request."""

    size: int
    limit: int
    limit_name: str

    def detail(self) -> str:
        return (
            f"the message is {self.size:,} bytes as Exchange counts it (attachments base64-encoded, ~4/3 of "
            f"their bytes), over {self.limit_name} of {self.limit:,} bytes; Exchange would refuse it "
            "(400 ErrorMessageSizeExceeded), in the middle of an upload for a large one"
        )


def size_refusal(message: Message, *, max_send_bytes: int) -> SizeRefusal | None:
    """The limit ``message`` passes, if any: the mailbox's MaxSendSize as outbox was told it
    (``max_send_bytes``; 0 = not known) or, above it, Exchange's 150 MB ceiling."""
    size = exchange_size(message)
    if 0 < max_send_bytes < MAX_MESSAGE_BYTES and size > max_send_bytes:
        return SizeRefusal(size, max_send_bytes, "the mailbox's MaxSendSize (OUTBOX_MAX_SEND_BYTES)")
    if size > MAX_MESSAGE_BYTES:
        return SizeRefusal(size, MAX_MESSAGE_BYTES, "Exchange Online's 150 MB message limit")
    return None
