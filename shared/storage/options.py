"""Options for the Azure Storage clients outbox builds (status table, queues, blobs).

Measured on these machines (benchmarks/bench_pipeline.py): with the environment-scanning default of
requests, each storage call spends ~0.4 ms of CPU looking up proxy variables and CA settings in
``os.environ`` (a Functions worker has a large environment), about a quarter of the SDK's client cost
per call. When no proxy variable is set, outbox turns that scan off; when one is, the default
behaviour (proxies honoured per request, NO_PROXY included) stays.

Timeouts: the SDKs wait 20 s to connect and 60 s per read, and retry 3 (storage) or 10 (tables) times
with back-offs of 15 s and more: a stalled account held an invocation for minutes, past the Functions
timeout, with no outcome logged. ``OUTBOX_STORAGE_TIMEOUT_S`` (10 s) bounds each request and both SDKs
retry twice, so one call gives up within ~63 s (queue, blob: 3 x 10 s + back-offs of 15 and 18 s) or
~32 s (table); an invocation's worst case (claim, Key Vault 2 x 30 s, Graph 30 s, sent mark, a requeue)
stays under host.json's 5-minute ``functionTimeout``, and the pipeline logs the failure. The message's
own retry, with its backoff, is the better place to wait out an outage than a request held open.
"""

from __future__ import annotations

import os
from typing import Any

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


RETRY_TOTAL = 2  # the storage SDK's default is 3, azure-core's (tables) 10


def client_options(environ: dict[str, str] | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
    """Keyword arguments for any of the storage clients (queue, blob and table SDKs all take these)."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    if not any(env.get(name) or env.get(name.lower()) for name in _PROXY_VARIABLES):
        options["use_env_settings"] = False
    if timeout_s is not None:
        options["connection_timeout"] = timeout_s
        options["read_timeout"] = timeout_s
    options["retry_total"] = RETRY_TOTAL
    return options


def settings_options(settings: Any) -> dict[str, Any]:
    """:func:`client_options` with the settings' storage timeout."""
    return client_options(timeout_s=settings.storage_timeout_s)


def table_options(settings: Any, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`settings_options` for the status table's client, over :func:`with_light_transport`."""
    options = client_options(environ, timeout_s=settings.storage_timeout_s)
    return with_light_transport(options, settings.storage_timeout_s)


def with_light_transport(options: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """``options`` over :class:`shared.storage.transport.Urllib3Transport` when no proxy variable is set
    (with one, ``requests`` keeps honouring it per request). For clients whose answers are small and read
    whole (the status table, the slot leases and budget counts), never for attachment downloads. The
    transport carries the timeouts itself: an SDK hands them only to a transport it builds."""
    if options.get("use_env_settings") is not False:
        return options
    from shared.storage.transport import Urllib3Transport

    return {**options, "transport": Urllib3Transport(connection_timeout=timeout_s, read_timeout=timeout_s)}
