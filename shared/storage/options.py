"""Options for the Azure Storage clients outbox builds (status table, queues, blobs).

Measured on these machines (benchmarks/bench_pipeline.py): with the environment-scanning default of
requests, each storage call spends ~0.4 ms of CPU looking up proxy variables and CA settings in
``os.environ`` (a Functions worker has a large environment), about a quarter of the SDK's client cost
per call. When no proxy variable is set, outbox turns that scan off; when one is, the default
behaviour (proxies honoured per request, NO_PROXY included) stays.

Timeouts: the SDKs wait 20 s to connect and 60 s per read, and retry 3 (storage) or 10 (tables) times
with back-offs of 15 s and more: a stalled account held an invocation for minutes, past the Functions
timeout, with no outcome logged. ``OUTBOX_STORAGE_TIMEOUT_S`` bounds each request, and the table client
retries as often as the others, so a stalled dependency fails the call in well under host.json's
``functionTimeout`` and the pipeline logs it.
"""

from __future__ import annotations

import os
from typing import Any

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


TABLE_RETRY_TOTAL = 3  # the queue and blob SDKs' own default; azure-core's (tables) is 10


def client_options(environ: dict[str, str] | None = None, *, timeout_s: float | None = None,
                   table: bool = False) -> dict[str, Any]:
    """Keyword arguments for a storage client; ``table`` for azure-data-tables (other retry names)."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    if not any(env.get(name) or env.get(name.lower()) for name in _PROXY_VARIABLES):
        options["use_env_settings"] = False
    if timeout_s is not None:
        options["connection_timeout"] = timeout_s
        options["read_timeout"] = timeout_s
    if table:
        options["retry_total"] = TABLE_RETRY_TOTAL
    return options


def settings_options(settings: Any, *, table: bool = False) -> dict[str, Any]:
    """:func:`client_options` with the settings' storage timeout."""
    return client_options(timeout_s=settings.storage_timeout_s, table=table)
