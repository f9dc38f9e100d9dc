"""Options for the Azure Storage clients outbox builds (status table, queues, blobs).

Measured on these machines (benchmarks/bench_pipeline.py): with the environment-scanning default of
requests, each storage call spends ~0.4 ms of CPU looking up proxy variables and CA settings in
``os.environ`` (a Functions worker has a large environment), about a quarter of the SDK's client cost
per call. When no proxy variable is set, outbox turns that scan off; when one is, the default
behaviour (proxies honoured per request, NO_PROXY included) stays.
"""

from __future__ import annotations

import os
from typing import Any

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def client_options(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    if any(env.get(name) or env.get(name.lower()) for name in _PROXY_VARIABLES):
        return {}
    return {"use_env_settings": False}
