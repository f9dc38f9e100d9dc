"""The pipeline the function runs, built in the CLI process for ``send --queue`` and ``send --now``.

It mirrors ``function_app.runtime.build_runtime`` (which lives in the Functions package, and shared/
never imports that package) with the CLI's short storage retry policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.pipeline import Pipeline
    from shared.settings import Settings


@contextlib.contextmanager
def pipeline(settings: Settings, *, sending: bool) -> Iterator[Pipeline]:
    """``sending=False`` builds no transports (enqueueing needs none: no Key Vault, no token)."""
    from shared.blobs import AzureBlobSource
    from shared.cli.storage import CLI_RETRY, TABLE_RETRY, queue_store
    from shared.pipeline import Pipeline
    from shared.status import StatusStore

    parts: list[Any] = []
    try:
        status = StatusStore(settings.storage.table_service_client(**TABLE_RETRY), settings.status_table)
        parts.append(status)
        queues = queue_store(settings)
        parts.append(queues)
        senders = blobs = None
        if sending:
            from shared.senders import Senders

            senders = Senders.from_settings(settings)
            parts.append(senders)
            blobs = AzureBlobSource(settings.storage.blob_service_client(**CLI_RETRY))
        yield Pipeline(settings, senders, status, queues, blobs)
    finally:
        for part in reversed(parts):
            with contextlib.suppress(Exception):
                part.close()
