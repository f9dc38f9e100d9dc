"""SMTP and Sent Items: does a submitted message have a copy in the sender's Sent Items, and if not, one
saved through Graph (``OUTBOX_SMTP_SENT_COPY``).

Sources disagree on what Exchange Online does: Microsoft's article on sending from a multifunction device
or application says client SMTP submission "Saves to Sent Items folder: Yes"; the seed FAQ says SMTP
sends are not saved and suggests saving a copy through Graph. So outbox can settle it per tenant:

- ``never`` (default): nothing after the send;
- ``always``: save a copy at once after each SMTP send (for a tenant known not to keep one);
- ``auto``: after ``OUTBOX_LOOKUP_SETTLE_S``, look for the message by its Message-ID in Sent Items
  (``Mail.ReadBasic``) and save a copy only when Exchange kept none (``Mail.ReadWrite``).

The copy is a sent item, not a draft and never a delivery: it is created in the Sent Items folder with
``PidTagMessageFlags`` set (:func:`shared.render_graph.render_sent_copy`), which sends nothing. Before a
second try at saving, the step looks first, so a save whose answer was lost leaves one copy, not two.
A message with ``saveToSentItems: false`` gets no copy whatever the setting.

The step is a pure decision around two Graph calls; the pipeline schedules it (the row's ``SentCopy``
column, a follow-up queue message) and records what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from shared.errors import OutboxError

if TYPE_CHECKING:
    from shared.message import Message
    from shared.transports.base import BlobSource


class CopyState(StrEnum):
    """The status row's ``SentCopy``."""

    PENDING = "pending"  # the step is due at the row's NextAttemptAt
    EXCHANGE = "exchange"  # Exchange kept the submission itself: found by its Message-ID
    SAVED = "saved"  # outbox saved the copy through Graph
    UNKNOWN = "unknown"  # auto could not look (no read permission): nothing saved
    FAILED = "failed"  # saving failed for good; the detail says why
    SKIPPED = "skipped"  # the setting is never now, or the copy cannot be one Graph request


TOO_LARGE = "outbox.sent_copy_too_large"


@runtime_checkable
class SavesSentCopies(Protocol):
    """What the step needs of a transport (Graph's)."""

    def in_sent_items(self, message: Message, *, internet_message_id: str) -> bool | None: ...

    def save_sent_copy(self, message: Message, *, internet_message_id: str, sent_at: datetime,
                       blobs: BlobSource | None) -> str | None: ...


@dataclass(frozen=True)
class CopyResult:
    state: CopyState
    tries: int  # saves tried so far, this one included
    detail: str | None = None
    request_id: str | None = None
    retry_after: float | None = None  # a pending result: the server's Retry-After, if it gave one
    error: OutboxError | None = None  # what failed, for the event


def wanted(mode: str, message: Message, transport: str) -> bool:
    """Whether a send of ``message`` through ``transport`` has a copy step."""
    return mode != "never" and transport == "smtp" and message.save_to_sent_items is not False


def first_due_s(mode: str, settle_s: float) -> float:
    """When the first step is due after the send: at once for ``always``, after the settle time for ``auto``."""
    return 0.0 if mode == "always" else max(0.0, settle_s)


def run_step(graph: SavesSentCopies, message: Message, *, internet_message_id: str, mode: str, tries: int,
             sent_at: datetime, blobs: BlobSource | None) -> CopyResult:
    """One step: look (``auto``, or any try after a save), then save when nothing was found.

    ``tries`` is the saves tried before this step. Graph's errors become a result: retryable ones leave the
    step pending, the rest end it as failed. Raises nothing but programming errors."""
    look = mode == "auto" or tries > 0
    saving = False
    try:
        if look:
            found = graph.in_sent_items(message, internet_message_id=internet_message_id)
            if found:
                # After a save of ours whose answer was lost, the item found is ours.
                return CopyResult(CopyState.SAVED if tries > 0 else CopyState.EXCHANGE, tries)
            if found is None and mode == "auto":
                return CopyResult(
                    CopyState.UNKNOWN, tries,
                    detail="the app may not read Sent Items (grant Mail.ReadBasic, or Mail.ReadWrite to save "
                    "copies), so whether Exchange kept a copy is unknown; nothing was saved")
        saving = True
        request_id = graph.save_sent_copy(message, internet_message_id=internet_message_id, sent_at=sent_at,
                                          blobs=blobs)
    except OutboxError as err:
        if err.code == TOO_LARGE:
            return CopyResult(CopyState.SKIPPED, tries, detail=err.detail, error=err)
        saved_tries = tries + 1 if saving else tries
        if err.category == "permission" and saving:
            # Graph says only "Access is denied": the missing permission is the one this call needs.
            text = (f"{err.code} ({err.status} {err.catalog or ''}): saving a copy in Sent Items needs Mail.ReadWrite "
                    "(application permission, scoped to the sending mailboxes with RBAC for Applications) or the "
                    "mailbox is outside the app's access scope; or set OUTBOX_SMTP_SENT_COPY=never")
        else:
            text = f"{err.code}: {err.hint or err.detail or err.category}"
        if err.retryable:
            return CopyResult(CopyState.PENDING, saved_tries, detail=text, retry_after=err.retry_after, error=err)
        return CopyResult(CopyState.FAILED, saved_tries, detail=text, error=err)
    return CopyResult(CopyState.SAVED, tries + 1, request_id=request_id)
