"""What every transport promises the pipeline, and the helpers they share (blob loading, the throttling
pause; the "mailbox busy" error is ``shared.pacing.mailbox_busy``): a new transport takes ``(settings, tokens, pacing, ...)`` and these."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shared.errors import OutboxError

if TYPE_CHECKING:
    from shared.message import Attachment, Message
    from shared.pacing import MailboxLimiter
    from shared.settings import Settings

log = logging.getLogger("shared.transports")


@dataclass(frozen=True)
class SendResult:
    """A send the server accepted (Graph 202 / SMTP 250 after DATA): not yet delivery."""

    transport: str  # "graph" | "smtp"
    mailbox: str
    internet_message_id: str
    request_id: str | None  # Graph request-id / the SMTP 250 reply after DATA (holds the queue id)
    client_request_id: str | None
    duration_ms: float
    path: str = "sendMail"  # "sendMail" | "uploadSession" | "draft" (a found draft sent again) | "smtp"


@dataclass(frozen=True)
class InDrafts:
    """A lookup found the message in the sender's Drafts, not in Sent Items: saved, not (yet) sent.

    ``ours``: a draft outbox made itself (the large path: draft, uploads, ``/send``), so it stays there
    when the ``/send`` never took effect; otherwise Exchange's own copy of a ``sendMail`` it accepted,
    which it moves to Sent Items once transport has it (Graph answers 202 "once the message is saved in
    Drafts", microsoft-graph-docs-contrib concepts/outlook-things-to-know-about-send-mail.md)."""

    draft_id: str
    ours: bool


@runtime_checkable
class SendsDrafts(Protocol):
    """A transport that can send a draft already in the mailbox (Graph's ``/messages/{id}/send``)."""

    def send_draft(self, message: Message, *, internet_message_id: str, draft_id: str) -> SendResult: ...


class BlobSource(Protocol):
    """Attachments stored by reference (``container/path``); the pipeline provides it."""

    def size(self, ref: str) -> int: ...

    def read_range(self, ref: str, offset: int, length: int) -> Iterator[bytes]:
        """Bytes ``offset`` to ``offset + length`` of the blob, streamed in pieces of the source's choosing
        (an upload session PUTs each range as it is read, so memory holds one piece, not the file)."""
        ...

    def read_all(self, ref: str) -> bytes: ...


@runtime_checkable
class Transport(Protocol):
    name: str

    def send(self, message: Message, *, internet_message_id: str, blobs: BlobSource | None) -> SendResult:
        """Send once. Raises a classified ``OutboxError`` whose ``request_sent`` / ``maybe_delivered``
        say truthfully whether the server may have the message. Never retries throttling or 5xx."""
        ...

    def find_sent(self, message: Message, *, internet_message_id: str) -> bool | InDrafts | None:
        """Whether the sender's Sent Items hold this Message-ID (or, for Graph, its Drafts: ``InDrafts``);
        None when that cannot be known."""
        ...

    def close(self) -> None: ...


def require_blobs(blobs: BlobSource | None, att: Attachment) -> BlobSource:
    """The blob source for an attachment stored by reference (a pipeline that passes none is a bug)."""
    if blobs is None:
        raise OutboxError(
            "config", "outbox.no_blob_source", detail=f"attachment {att.name!r} is a blob reference "
            f"({att.blob}) but no blob source was given", hint="the pipeline must pass a BlobSource",
        )
    return blobs


def load_blobs(message: Message, blobs: BlobSource | None, *, skip: frozenset[int] = frozenset()) -> Message:
    """``message`` with each blob attachment's content read (except those at the indexes in ``skip``)."""
    wanted = [i for i, a in enumerate(message.attachments) if a.content is None and a.blob and i not in skip]
    if not wanted:
        return message
    attachments = list(message.attachments)
    for i in wanted:
        att = attachments[i]
        attachments[i] = att.with_content(require_blobs(blobs, att).read_all(att.blob or ""))
    return replace(message, attachments=tuple(attachments))


def pause_mailbox(limiter: MailboxLimiter, mailbox: str, err: OutboxError, settings: Settings) -> None:
    """Throttled: hold every send for ``mailbox`` for the server's Retry-After (the backoff base when it
    gave none), at most ``OUTBOX_RETRY_AFTER_MAX_S``."""
    seconds = err.retry_after if err.retry_after is not None else settings.backoff_base_s
    seconds = min(seconds, settings.retry_after_max_s)
    log.warning("%s throttled %s (%s): pausing it for %.0f s", err.transport, mailbox, err.code, seconds)
    limiter.pause(mailbox, seconds)

