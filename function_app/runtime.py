"""Objects made once per worker process and shared by every invocation.

Settings, storage clients, the transports (MSAL app, token cache, keep-alive HTTP client, SMTP
sessions) are expensive to build and safe to share, so they live behind a lazily built singleton
(``shared.runtime.build_runtime``, the builder the CLI uses too). A failed build is not cached: the
next invocation tries again (e.g. storage was briefly down).
"""

from __future__ import annotations

import threading

from shared.pipeline import Pipeline
from shared.runtime import Runtime, build_runtime
from shared.settings import load_settings

_lock = threading.Lock()
_current: Runtime | None = None


def runtime() -> Runtime:
    global _current
    current = _current
    if current is not None:
        return current
    with _lock:
        if _current is None:
            _current = build_runtime(load_settings())
        return _current


def pipeline() -> Pipeline:
    return runtime().pipeline


def keepalive() -> None:
    """The keep-alive run over the process's sign-in tokens (nothing to do without delegated mailboxes)."""
    from shared.signins import keepalive as run

    current = runtime()
    delegated = current.senders.delegated if current.senders is not None else None
    if delegated is None:
        return
    run.run(delegated, current.stores.signins)


def close_runtime() -> None:
    """Drop the process's runtime (the local host calls this when it stops or reloads settings)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.close()
