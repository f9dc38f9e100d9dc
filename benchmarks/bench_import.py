"""Import time of the Functions app, as the worker pays it at cold start (fresh process each round).

    .venv/bin/python -m benchmarks.bench_import [--rounds N]

Two figures per module, medians over N fresh interpreters:
- ``importtime``: the cumulative microseconds ``python -X importtime`` reports for the module itself;
- ``wall``: the process's wall time minus that of an interpreter doing nothing (start-up excluded).
The budget (performance-anchors.md) is 250 ms for ``import function_app``; ``main`` is what the worker
imports (PYTHON_SCRIPT_FILE_NAME=main.py). The first-invocation cost (settings, SDK imports, clients) is
printed too: it is paid once per process, on the first message, not at indexing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 250.0


def _run(code: str, *, importtime: bool = False) -> tuple[float, str]:
    args = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    return (time.perf_counter() - start) * 1000, proc.stderr


def importtime_ms(module: str) -> float:
    _, err = _run(f"import {module}", importtime=True)
    for line in reversed(err.splitlines()):
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    raise RuntimeError(f"{module} not in -X importtime output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    baseline = statistics.median(_run("pass")[0] for _ in range(args.rounds))
    print(f"import cost in fresh processes (median of {args.rounds}; load {os.getloadavg()[0]:.2f}; "
          f"bare interpreter {baseline:.0f} ms)")
    for module in ("function_app", "main"):
        it = statistics.median(importtime_ms(module) for _ in range(args.rounds))
        wall = statistics.median(_run(f"import {module}")[0] for _ in range(args.rounds)) - baseline
        print(f"  {module:<14} importtime {it:6.1f} ms   wall {wall:6.1f} ms   ({it / BUDGET_MS:.2f}x of the "
              f"{BUDGET_MS:.0f} ms budget)")
    first = ("import function_app.runtime as r, shared.senders, shared.storage.status, shared.storage.queues, shared.storage.blobs, "
             "azure.storage.queue, azure.data.tables, azure.storage.blob, msal, httpx, azure.identity, "
             "azure.keyvault.secrets")
    wall = statistics.median(_run(first)[0] for _ in range(args.rounds)) - baseline
    print(f"  first invocation's imports (SDKs, transports): wall {wall:6.1f} ms, once per process")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
