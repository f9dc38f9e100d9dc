"""The pipeline with everything it runs on: one builder for the Functions app and the CLI.

The Functions app builds one per worker process and keeps it (``function_app/runtime.py``); the CLI
builds one per command (``send --queue`` needs no transports, ``send --now`` does) with its own short
storage retry policy. Both get the same parts, wired the same way, and close them the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.pipeline import Pipeline
    from shared.settings import Settings

log = logging.getLogger("outbox.runtime")


@dataclass
class Runtime:
    settings: Settings
    senders: Any  # shared.senders.Senders, or None when built without sending
    status: Any  # shared.status.StatusStore
    queues: Any  # shared.queues.QueueStore
    blobs: Any  # shared.blobs.AzureBlobSource, or None when built without sending
    pipeline: Pipeline

    def close(self) -> None:
        """Close every part that holds connections; one that fails to close does not keep the others open."""
        for part in (self.senders, self.status, self.queues):
            close = getattr(part, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("closing %s failed", type(part).__name__)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_runtime(settings: Settings, *, sending: bool = True,
                  storage_options: Mapping[str, Any] | None = None,
                  table_options: Mapping[str, Any] | None = None) -> Runtime:
    """The parts and the pipeline over them. ``sending=False`` builds no transports and no blob reader
    (enqueueing needs neither: no Key Vault read, no token). ``storage_options`` go to the queue and blob
    clients, ``table_options`` to the table client (the two SDKs name their retry settings differently);
    both default to :func:`shared.storage.settings_options`."""
    from shared.blobs import AzureBlobSource
    from shared.pipeline import Pipeline
    from shared.queues import QueueStore
    from shared.status import StatusStore
    from shared.storage import settings_options

    storage = {**settings_options(settings), **(storage_options or {})}
    tables = {**settings_options(settings, table=True), **(table_options or {})}
    parts: list[Any] = []
    try:
        status = StatusStore(settings.storage.table_service_client(**tables), settings.status_table)
        parts.append(status)
        queues = QueueStore(
            settings.storage.queue_service_client(**storage),
            queue=settings.queue,
            poison_queue=settings.poison_queue,
            blob_service=settings.storage.blob_service_client(**storage),
            container=settings.attachments_container,
        )
        parts.append(queues)
        senders = blobs = None
        if sending:
            from shared.senders import Senders

            senders = Senders.from_settings(settings)
            parts.append(senders)
            blobs = AzureBlobSource(settings.storage.blob_service_client(**storage),
                                    containers=settings.attachment_containers)
    except BaseException:
        for part in reversed(parts):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", type(part).__name__)
        raise
    return Runtime(settings, senders, status, queues, blobs, Pipeline(settings, senders, status, queues, blobs))
