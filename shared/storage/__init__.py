"""Everything outbox keeps in the storage account, in one place: the status table, the work and poison
queues, attachment blobs, and how their clients are built.

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
        from shared.storage.options import settings_options

        options = settings_options(settings)
        return cls(options, options)

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
    """The status table, the queues and the attachment reader over one set of clients."""

    status: StatusStore
    queues: QueueStore
    blobs: AzureBlobSource
    signins: SigninStore  # delegated mailboxes' sign-ins (shared.signins)

    def close(self) -> None:
        """Close every client; one that fails to close does not keep the others open."""
        for part in (self.status, self.queues, self.blobs):
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
    return Stores(status, queues, blobs, SigninStore(blob_service, settings.signin_container))
