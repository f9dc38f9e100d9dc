"""Peak memory of the sending process with large blob attachments (Graph upload sessions).

    .venv/bin/python -m benchmarks.bench_memory [--sizes 10,50,110] [--quick]

The parent starts the harness with Azurite and uploads one blob per size to the attachment container.
For each size a fresh child process builds outbox's runtime exactly as the function does
(``build_runtime``), sends a small message first (imports, Key Vault certificate, token, TLS: the
steady state of a warm worker), notes its peak RSS, then sends one message whose attachment is the blob
(``Pipeline.send_now``: draft, upload session, ranged PUTs, send) and notes the peak again (VmHWM,
reset with /proc/self/clear_refs before the send). The figure is the growth of the peak over the warm
process's RSS: what a large attachment costs an instance on top of its base.
Target (issue "one instance does more for less"): < 20 MB for 10, 50 and 150 MB attachments. Exchange counts
a message with its attachments base64-encoded (~4/3), so its 150 MB limit takes an attachment of ~112 MB
at most: the largest size measured is 110 MB, with the mailbox's MaxSendSize raised to that limit in the
harness's scenario and in OUTBOX_MAX_SEND_BYTES (a tenant that raised it with Set-Mailbox -MaxSendSize).
"""

from __future__ import annotations

import json
import os
import sys

CHILD_FLAG = "--child"
TARGET_GROWTH_MB = 20.0


def _status_mb(field: str) -> float:
    """A /proc/self/status figure (kB) in MB. VmHWM is this process image's own peak: unlike
    getrusage's ru_maxrss it does not carry over the parent's pages from before exec."""
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115 - tiny, read at once
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Start the peak (VmHWM) again from the current RSS (Linux: clear_refs "5")."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def child(blob_ref: str) -> None:
    from shared.runtime import build_runtime
    from shared.settings import load_settings

    settings = load_settings(os.environ)
    small = {"from": "sender@contoso.example", "to": ["ann@fabrikam.example"], "subject": "warm", "text": "x"}
    with build_runtime(settings) as runtime:
        warm = runtime.pipeline.send_now({**small, "id": f"warm-{os.getpid()}"})
        assert warm.kind == "sent", warm
        _reset_peak()
        before = _status_mb("VmRSS")
        big = {**small, "id": f"big-{os.getpid()}", "subject": "large",
               "attachments": [{"name": "big.bin", "blob": blob_ref}]}
        outcome = runtime.pipeline.send_now(big)
        after = _status_mb("VmHWM")
    print(json.dumps({"kind": str(outcome.kind), "code": outcome.code, "before_mb": before, "after_mb": after}),
          flush=True)


if __name__ == "__main__" and CHILD_FLAG in sys.argv:
    child(sys.argv[sys.argv.index(CHILD_FLAG) + 1])
    raise SystemExit(0)

# -- the parent ---------------------------------------------------------------------------------------------

import argparse  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
MB = 1000 * 1000  # sizes are decimal MB, as Microsoft states its 150 MB attachment ceiling


def _pattern(total: int, piece: int = 4 * MiB) -> Iterator[bytes]:
    """``total`` bytes that do not compress, made piece by piece (the parent stays small too)."""
    block = os.urandom(piece)
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        yield block[:n]
        sent += n


def run_size(env: dict[str, str], ref: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", CHILD_FLAG, ref], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,110", help="attachment sizes in MB (at most ~112: base64)")
    parser.add_argument("--quick", action="store_true", help="one 10 MB attachment (smoke test)")
    args = parser.parse_args(argv)
    sizes = [10] if args.quick else [int(s) for s in args.sizes.split(",")]

    from azure.storage.blob import BlobServiceClient

    from harness.scenario import EXCHANGE_MAX_MESSAGE_BYTES, Scenario
    from harness.up import Harness

    raised = Scenario.default().with_mailbox("sender@contoso.example", max_send_bytes=EXCHANGE_MAX_MESSAGE_BYTES)
    with tempfile.TemporaryDirectory() as state, Harness.start(raised, state, with_azurite=True) as h:
        values = h.settings_values()
        values["OUTBOX_MAX_SEND_BYTES"] = str(EXCHANGE_MAX_MESSAGE_BYTES)
        container = f"mem-{uuid.uuid4().hex[:8]}"
        values.update({"OUTBOX_QUEUE": f"mem{uuid.uuid4().hex[:8]}", "OUTBOX_STATUS_TABLE": f"mem{uuid.uuid4().hex[:8]}",
                       "OUTBOX_ATTACHMENTS_CONTAINER": container})
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
        env.update(values)
        service = BlobServiceClient.from_connection_string(values["AzureWebJobsStorage"])
        service.get_container_client(container).create_container()
        results = []
        for size in sizes:
            name = f"big-{size}mb.bin"
            service.get_blob_client(container, name).upload_blob(_pattern(size * MB), length=size * MB,
                                                                 max_concurrency=1)
            h.reset()  # a fresh upload budget (150 MB per 5 minutes) for each size
            result = run_size(env, f"{container}/{name}")
            results.append((size, result))
            service.get_blob_client(container, name).delete_blob()
    load = os.getloadavg()[0]
    print(f"bench_memory: peak RSS of the sending process, one message with a blob attachment through a Graph "
          f"upload session (load average {load:.1f} on {os.cpu_count()} cores)")
    ok = True
    for size, r in results:
        growth = r["after_mb"] - r["before_mb"]
        verdict = "OK" if growth < TARGET_GROWTH_MB and r["kind"] == "sent" else "OVER TARGET"
        ok = ok and verdict == "OK"
        print(f"  {size:4d} MB attachment: {r['kind']} {r['code'] or ''}; peak RSS {r['before_mb']:.0f} -> "
              f"{r['after_mb']:.0f} MB, growth {growth:.1f} MB (target < {TARGET_GROWTH_MB:.0f}): {verdict}")
    worst = max(r["after_mb"] - r["before_mb"] for _, r in results)
    print(f"SUMMARY memory: worst peak RSS growth {worst:.1f} MB for {', '.join(f'{s} MB' for s in sizes)} "
          f"attachments (target < {TARGET_GROWTH_MB:.0f} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
