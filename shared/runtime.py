"""The pipeline with everything it runs on: one builder for the Functions app and the CLI.

The Functions app builds one per worker process and keeps it (``function_app/runtime.py``); the CLI
builds one per command (``send --queue`` needs no transports, ``send --now`` does) with its own short
storage retry policy. Both get the same parts, wired the same way, and close them the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.pipeline import Pipeline
    from shared.senders import Senders
    from shared.settings import Settings
    from shared.storage import StorageOptions, Stores
    from shared.storage.blobs import AzureBlobSource
    from shared.storage.queues import QueueStore
    from shared.storage.status import StatusStore

log = logging.getLogger("outbox.runtime")


@dataclass
class Runtime:
    settings: Settings
    senders: Senders | None  # None when built without sending
    stores: Stores
    pipeline: Pipeline

    @property
    def status(self) -> StatusStore:
        return self.stores.status

    @property
    def queues(self) -> QueueStore:
        return self.stores.queues

    @property
    def blobs(self) -> AzureBlobSource | None:
        """The attachment reader; None when built without sending."""
        return self.stores.blobs if self.senders is not None else None

    def close(self) -> None:
        """Close every part that holds connections; one that fails to close does not keep the others open."""
        if self.senders is not None:
            try:
                self.senders.close()
            except Exception:
                log.exception("closing the transports failed")
        self.stores.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_runtime(settings: Settings, *, sending: bool = True, storage: StorageOptions | None = None) -> Runtime:
    """The stores (:func:`shared.storage.build_stores`), the transports and the pipeline over them.

    ``sending=False`` builds no transports and reads no attachments (enqueueing needs neither: no Key
    Vault read, no token). ``storage``: the client options (the function's by default; the CLI passes
    :meth:`shared.storage.StorageOptions.cli`)."""
    from shared.pipeline import Pipeline
    from shared.storage import build_stores

    stores = build_stores(settings, storage)
    senders = None
    if sending:
        from shared.senders import Senders

        try:
            from shared.pacing import Pacing

            senders = Senders.from_settings(settings, pacing=Pacing.from_settings(settings, slots=stores.slots),
                                            signins=stores.signins)
        except BaseException:
            stores.close()
            raise
    blobs = stores.blobs if sending else None
    return Runtime(settings, senders, stores, Pipeline(settings, senders, stores.status, stores.queues, blobs))
