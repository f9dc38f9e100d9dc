"""Everything outbox keeps in the storage account, in one place: the status table, the work and poison
queues, attachment blobs, the per-mailbox slots shared by instances (``OUTBOX_SLOTS=blob``), and how their
clients are built.

``build_stores(settings)`` is the one builder: the Functions runtime, the CLI (with its short retry
profile), the local host's demo and the benchmarks all take their stores from it, so a client option
(a timeout, the proxy scan, a retry policy) is set in one place and the three service clients are built
once per set of stores and shared (the attachment reader and the poison-original parking use the same
blob client).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.pacing import MailboxSlots
    from shared.settings import Settings
    from shared.signins.store import SigninStore
    from shared.storage.blobs import AzureBlobSource
    from shared.storage.queues import QueueStore
    from shared.storage.status import StatusStore

log = logging.getLogger("outbox.storage")

# The CLI's profile: the SDK's default retry takes ~86 s to give up on a closed port, and an operator at
# a terminal wants to hear about a wrong connection string in seconds. Queue and blob clients use the
# storage SDK's ExponentialRetry (default first wait 15 s); tables use azure-core's retry arguments.
CLI_RETRY: dict[str, Any] = {"retry_total": 2, "initial_backoff": 0.2, "increment_base": 1, "random_jitter_range": 0.2}
TABLE_RETRY: dict[str, Any] = {"retry_total": 2, "retry_backoff_factor": 0.5, "retry_backoff_max": 2}


@dataclass(frozen=True)
class StorageOptions:
    """Client keyword arguments: ``services`` for the queue and blob clients, ``tables`` for the table
    client (the SDKs name their retry settings differently)."""

    services: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def function(cls, settings: Settings) -> StorageOptions:
        """What the function uses: the SDK defaults, bounded by OUTBOX_STORAGE_TIMEOUT_S."""
        from shared.storage.options import settings_options, table_options

        return cls(settings_options(settings), table_options(settings))

    @classmethod
    def cli(cls, settings: Settings) -> StorageOptions:
        """The CLI's: the same, with retries that give up in seconds."""
        base = cls.function(settings)
        return cls({**base.services, **CLI_RETRY}, {**base.tables, **TABLE_RETRY})

    def merged(self, services: Mapping[str, Any] | None = None,
               tables: Mapping[str, Any] | None = None) -> StorageOptions:
        return StorageOptions({**self.services, **(services or {})}, {**self.tables, **(tables or {})})


@dataclass
class Stores:
    """The status table, the queues and the attachment reader over one set of clients, and the mailbox
    slots (None with ``OUTBOX_SLOTS=local``: the pacing counts them in process)."""

    status: StatusStore
    queues: QueueStore
    blobs: AzureBlobSource
    signins: SigninStore  # delegated mailboxes' sign-ins (shared.signins)
    slots: MailboxSlots | None = None
    slot_client: Any = None  # the slots' own blob client (short timeout, no retries)

    def close(self) -> None:
        """Close every client; one that fails to close does not keep the others open. Slots first: their
        leases are released, so other instances need not wait for them to expire."""
        parts: list[Any] = [self.slots.graph, self.slots.smtp] if self.slots is not None else []
        if self.slot_client is not None:
            parts.append(self.slot_client)
        for part in (*parts, self.status, self.queues, self.blobs):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", type(part).__name__)

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_stores(settings: Settings, options: StorageOptions | None = None) -> Stores:
    """The stores for ``settings`` (default options: :meth:`StorageOptions.function`)."""
    from shared.signins.store import SigninStore
    from shared.storage.blobs import AzureBlobSource
    from shared.storage.queues import QueueStore
    from shared.storage.status import StatusStore

    opts = options or StorageOptions.function(settings)
    blob_service = settings.storage.blob_service_client(**opts.services)
    status = StatusStore(settings.storage.table_service_client(**opts.tables), settings.status_table)
    queues = QueueStore(
        settings.storage.queue_service_client(**opts.services),
        queue=settings.queue,
        poison_queue=settings.poison_queue,
        blob_service=blob_service,
        container=settings.attachments_container,
    )
    blobs = AzureBlobSource(blob_service, containers=settings.attachment_containers)
    signins = SigninStore(blob_service, settings.signin_container)
    if settings.slots != "blob":
        return Stores(status, queues, blobs, signins)
    slot_client = settings.storage.blob_service_client(**slot_client_options(settings, opts))
    return Stores(status, queues, blobs, signins, build_slots(settings, slot_client), slot_client)


def slot_client_options(settings: Settings, options: StorageOptions) -> dict[str, Any]:
    """A slow slot store must not hold a send: each request gives up after OUTBOX_SLOT_TIMEOUT_S, without
    the SDK's retries (the safe share takes over; the store is tried again a third of a lease later). Lease
    and budget answers are small, so the client goes over the light transport (shared/storage/transport.py)."""
    from shared.storage.options import with_light_transport

    timeout = settings.slot_timeout_s
    return with_light_transport(
        {**options.services, "connection_timeout": timeout, "read_timeout": timeout, "retry_total": 0}, timeout)


def build_slots(settings: Settings, blob_service: Any) -> MailboxSlots:
    """Graph request slots and SMTP connection slots per app + mailbox, as blob leases, and the Graph request
    budget per app + mailbox, as counts in blob metadata."""
    from shared.pacing import MailboxSlots
    from shared.storage.budget import BlobBudget
    from shared.storage.slots import BlobSlots

    container = blob_service.get_container_client(settings.slots_container)
    common: dict[str, Any] = {"scope": settings.client_id or "app", "lease_s": settings.slot_lease_s,
                              "idle_s": settings.slot_idle_s, "probe_s": settings.slot_probe_s,
                              "idle_alone_s": settings.slot_idle_alone_s}
    graph = BlobSlots(container, service="graph", capacity=settings.graph_concurrency,
                      safe_share=settings.graph_concurrency // settings.expected_instances, **common)
    smtp = BlobSlots(container, service="smtp", capacity=settings.smtp_connections,
                     safe_share=settings.smtp_connections // settings.expected_instances, **common)
    budget = BlobBudget(container, scope=settings.client_id or "app", limit=settings.graph_budget_requests,
                        window_s=settings.graph_budget_window_s,
                        safe_share=settings.graph_budget_requests // settings.expected_instances,
                        retry_s=settings.slot_lease_s / 3)
    return MailboxSlots(graph, smtp, budget)
