"""The seams the pipeline is built on, as Protocols: what it needs from its status table, its queues, its
transports and its settings, and nothing more.

The production parts (shared.storage.*, shared.senders.Senders, shared.settings.Settings) satisfy them
structurally; a test or a benchmark can put anything with the same methods in their place (the pipeline
tests script the transports, bench_pipeline keeps the status rows in a dict). A new store or transport
goes behind one of these, and the pipeline does not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.acceptance import AcceptanceRules
from shared.decision import RetryRules

if TYPE_CHECKING:
    from shared.errors import OutboxError
    from shared.storage.status import Claim, Queued, StatusRow
    from shared.transports.base import BlobSource, Transport

__all__ = ["BlobSource", "BudgetPort", "PipelineSettings", "QueuePort", "SlotPort", "StatusPort", "Transport", "TransportSource"]


class PipelineSettings(AcceptanceRules, RetryRules, Protocol):
    """The settings the pipeline reads (shared.settings.Settings has them all)."""

    @property
    def lease_s(self) -> float: ...

    @property
    def smtp_sent_copy(self) -> str: ...


class StatusPort(Protocol):
    """The status table: one row per message id (shared.storage.status.StatusStore)."""

    def get(self, message_id: str) -> StatusRow | None: ...

    def claim(self, message_id: str, *, owner: str, lease_s: float, transport: str | None, mailbox: str | None,
              internet_message_id: str | None = None, fingerprint: str | None = None) -> Claim: ...

    def record_queued(self, message_id: str, *, transport: str | None, mailbox: str | None,
                      internet_message_id: str | None = None, fingerprint: str | None = None) -> Queued: ...

    def record_invalid(self, message_id: str, *, error: OutboxError, mailbox: str | None = None) -> bool: ...

    def mark_sent(self, message_id: str, *, transport: str | None, request_ids: Iterable[str | None] = (),
                  sent_via: str = "send", possibly_duplicated: bool | None = None,
                  previous: StatusRow | None = None, sent_copy_due_s: float | None = None) -> StatusRow: ...

    def take_sent_copy(self, message_id: str, *, owner: str, lease_s: float,
                       previous: StatusRow) -> StatusRow | None: ...

    def finish_sent_copy(self, message_id: str, *, state: str, tries: int, detail: str | None = None,
                         due_s: float | None = None, previous: StatusRow | None = None) -> StatusRow: ...

    def mark_retrying(self, message_id: str, *, error: OutboxError, delay_s: float, state: str = "retrying",
                      attempts: int | None = None, request_ids: Iterable[str | None] = (),
                      previous: StatusRow | None = None) -> None: ...

    def mark_poisoned(self, message_id: str, *, error: OutboxError, attempts: int | None = None,
                      transport: str | None = None, mailbox: str | None = None,
                      request_ids: Iterable[str | None] = (), previous: StatusRow | None = None,
                      state: str = "poisoned", throttled: int | None = None) -> None: ...

    def release(self, message_id: str, *, attempts: int, state: str, delay_s: float,
                previous: StatusRow | None = None, error: OutboxError | None = None,
                throttled: int | None = None) -> None: ...


class QueuePort(Protocol):
    """The work queue and its poison queue (shared.storage.queues.QueueStore)."""

    def enqueue(self, message: Mapping[str, Any], *, delay_s: float = 0.0) -> str: ...

    def requeue(self, message: Mapping[str, Any], *, delay_s: float) -> str: ...

    def poison(self, envelope: dict[str, Any], *, message_id: str | None = None) -> str: ...


class TransportSource(Protocol):
    """The transports by name (shared.senders.Senders)."""

    def transport(self, name: str) -> Transport: ...


class SlotPort(Protocol):
    """Per-mailbox slots of one service: a Graph request in flight holds one (Outlook allows 4 per app and
    mailbox), an open SMTP connection holds one (Exchange allows 3).

    ``shared.pacing.LocalSlots`` counts them in this process (``OUTBOX_SLOTS=local``);
    ``shared.storage.slots.BlobSlots`` shares them with every instance through blob leases
    (``OUTBOX_SLOTS=blob``). Slots are counted, not named: whoever gives one back gives back any.
    """

    @property
    def capacity(self) -> int:
        """Slots per mailbox across everyone who shares them."""
        ...

    @property
    def idle_s(self) -> float:
        """How long a slot given back stays this process's (inf: it never leaves). An SMTP session idle this
        long is closed: Exchange counts the open connection, not the message."""
        ...

    def take(self, mailbox: str, wait_s: float) -> bool:
        """Hold one slot of ``mailbox``, waiting up to ``wait_s`` for one to free; False when none did."""
        ...

    def give_back(self, mailbox: str) -> None:
        """End one hold of ``mailbox`` (the request ended, the connection closed)."""
        ...

    def close(self) -> None:
        """Give back whatever is held for good (a store releases its leases so others need not wait)."""
        ...


class BudgetPort(Protocol):
    """A request budget per mailbox shared by every instance (Graph: 10,000 per 10 minutes per app and
    mailbox); ``shared.storage.budget.BlobBudget``. Each process still keeps its own window too."""

    def take(self, mailbox: str, cost: int = 1) -> float:
        """0.0: ``cost`` requests may go now (they are counted); else the seconds until they would fit."""
        ...
