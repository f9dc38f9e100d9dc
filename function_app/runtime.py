"""Objects made once per worker process and shared by every invocation.

Settings, storage clients, the transports (MSAL app, token cache, keep-alive HTTP client, SMTP
sessions) are expensive to build and safe to share, so they live behind a lazily built singleton.
A failed build is not cached: the next invocation tries again (e.g. storage was briefly down).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from shared.pipeline import Pipeline

log = logging.getLogger("outbox.runtime")

_lock = threading.Lock()
_current: Runtime | None = None


@dataclass
class Runtime:
    settings: Any
    senders: Any
    status: Any
    queues: Any
    blobs: Any
    pipeline: Pipeline

    def close(self) -> None:
        for part in (self.senders, self.status, self.queues):
            close = getattr(part, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.exception("closing %s failed", type(part).__name__)


def build_runtime(environ: Any = None, settings_file: Any = None) -> Runtime:
    from shared.blobs import AzureBlobSource
    from shared.queues import QueueStore
    from shared.senders import Senders
    from shared.settings import load_settings
    from shared.status import StatusStore

    settings = load_settings(environ, settings_file)
    senders = Senders.from_settings(settings)
    status = StatusStore.from_settings(settings)
    queues = QueueStore.from_settings(settings)
    blobs = AzureBlobSource.from_settings(settings)
    pipeline = Pipeline(settings, senders, status, queues, blobs)
    return Runtime(settings, senders, status, queues, blobs, pipeline)


def runtime() -> Runtime:
    global _current
    current = _current
    if current is not None:
        return current
    with _lock:
        if _current is None:
            _current = build_runtime()
        return _current


def pipeline() -> Pipeline:
    return runtime().pipeline


def close_runtime() -> None:
    """Drop the process's runtime (the local host calls this when it stops or reloads settings)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.close()
