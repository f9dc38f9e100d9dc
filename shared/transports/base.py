"""What every transport promises the pipeline, and helpers they share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from shared.message import Message


@dataclass(frozen=True)
class SendResult:
    """A send the server accepted (Graph 202 / SMTP 250 after DATA): not yet delivery."""

    transport: str  # "graph" | "smtp"
    mailbox: str
    internet_message_id: str
    request_id: str | None  # Graph request-id / the SMTP 250 reply after DATA (holds the queue id)
    client_request_id: str | None
    duration_ms: float
    path: str = "sendMail"  # "sendMail" | "uploadSession" | "smtp"


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

    def find_sent(self, message: Message, *, internet_message_id: str) -> bool | None:
        """Whether the sender's Sent Items hold this Message-ID; None when that cannot be known."""
        ...

    def close(self) -> None: ...
