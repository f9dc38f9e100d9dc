"""Many mailboxes on one instance: does latency cost throughput when no mailbox is at its limit?

    .venv/bin/python -m benchmarks.bench_mailboxes [--quick] [--messages N] [--mailboxes M]
                                                   [--threads N] [--batch N] [--threshold N]

The question (issue "one instance does more for less"): one local Functions host sends M = 20
mailboxes' mail at 100 ms Graph latency; with no 429 and no mailbox at its 4-in-flight limit, it should
reach >= 90 % of what the same host does for one mailbox at 0 ms latency (its CPU-bound rate), measured
in the same run. A synchronous queue function sends at most as many messages at once as the worker
has threads (PYTHON_THREADPOOL_THREAD_COUNT, default min(32, cores + 4)) and host.json lets in
(batchSize + newBatchThreshold), so this is what those two numbers buy.

What runs: as bench_goodput (the harness in its own process, Azurite, the local host in this one over
the real ``function_app`` with the project's host.json), twice with the same host settings:
1. one mailbox, Graph at 0 ms: the host's own ceiling on this machine;
2. M mailboxes round-robin, Graph at 100 ms, 4 in flight per mailbox at the harness.
Rate = (deliveries - 4) / (last - first delivery), as bench_goodput. The thread count and the batch
come from host.json and local.settings unless given (``--threads``, ``--batch``, ``--threshold``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.bench_goodput import OutcomeCounter, RemoteHarness, _enqueue, _rate

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.90
DOMAIN = "contoso.example"


def _mailboxes(count: int) -> list[str]:
    return [f"box{n:02d}@{DOMAIN}" for n in range(1, count + 1)]


def _scenario_patch(boxes: list[str], latency_ms: float) -> dict[str, Any]:
    return {
        "limits": {"graph": {"latency_ms": latency_ms, "concurrency": 4, "requests_per_window": 1_000_000,
                             "window_s": 600}},
        "apps": {"outbox-sender": {"graph": {"mailboxes": ["*"]}}},
        "mailboxes": {box: {"display_name": box.split("@")[0], "licensed": True, "smtp_auth_enabled": True}
                      for box in boxes},
    }


def _body(sender: str, i: int) -> str:
    return json.dumps({"id": f"mb-{i}-{uuid.uuid4().hex[:8]}", "from": sender,
                       "to": [{"address": "ann@fabrikam.example", "name": "Ann"}], "subject": f"Mailboxes {i}",
                       "text": "Hello Ann,\n\nyour order has shipped.\n"})


def run(harness: RemoteHarness, counter: OutcomeCounter, *, senders: list[str], latency_ms: float, messages: int,
        host_values: dict[str, str], queue_overrides: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    from azure.storage.queue import QueueServiceClient

    from harness.localhost import LocalHost

    harness.reset()
    harness.control.apply_scenario(patch=_scenario_patch(senders, latency_ms))
    tag = uuid.uuid4().hex[:8]
    values = harness.settings_values()
    values.update({"OUTBOX_QUEUE": f"mb-{tag}", "OUTBOX_STATUS_TABLE": f"mb{tag}",
                   "OUTBOX_ATTACHMENTS_CONTAINER": f"mb-{tag}", **host_values})
    service = QueueServiceClient.from_connection_string(values["AzureWebJobsStorage"])
    queue = service.get_queue_client(values["OUTBOX_QUEUE"])
    queue.create_queue()
    _enqueue(queue, [_body(senders[i % len(senders)], i) for i in range(messages)])
    harness.clear_observations()
    counter.reset()
    host = LocalHost(app_root=ROOT, values=values, http_port=None, queue_overrides=queue_overrides or None)
    started = time.time()
    host.start()
    try:
        counter.wait_for("sent", messages, timeout_s)
        times = harness.delivery_times()
        requests, throttled = harness.graph_counts()
        threads = host.executor._max_workers
        opts = host.queue_options
        slot_ops = _slot_operations()
    finally:
        host.stop()
        with contextlib.suppress(Exception):
            queue.delete_queue()
        service.close()
    return {"rate": _rate(times), "delivered": len(times), "requests": requests, "throttled": throttled,
            "deferred": counter.outcomes["deferred"], "threads": threads, "batch": opts.batch_size,
            "threshold": opts.new_batch_threshold, "cpu_ms": counter.steady_cpu_ms(), "slot_ops": slot_ops,
            "span_s": times[-1] - times[0] if times else 0.0, "start_s": (times[0] - started) if times else 0.0}


def _slot_operations() -> dict[str, int]:
    """Slot-lease and budget operations of the host's runtime so far (empty with OUTBOX_SLOTS=local)."""
    from function_app import runtime as app_runtime

    current = app_runtime._current
    slots = current.stores.slots if current is not None else None
    graph: Any = getattr(slots, "graph", None)
    ops: dict[str, int] = dict(graph.operations()) if hasattr(graph, "operations") else {}
    budget = getattr(slots, "graph_budget", None)
    if budget is not None and hasattr(budget, "operations"):
        ops.update({f"budget_{k}": v for k, v in budget.operations().items()})
    return ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--mailboxes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="PYTHON_THREADPOOL_THREAD_COUNT for the host")
    parser.add_argument("--batch", type=int, default=None, help="host.json batchSize override")
    parser.add_argument("--threshold", type=int, default=None, help="host.json newBatchThreshold override")
    parser.add_argument("--slots", choices=("blob", "local"), default=None,
                        help="OUTBOX_SLOTS for the host (default: the setting's default, blob leases)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an app setting for the host, e.g. OUTBOX_SLOT_IDLE_S=2 (repeatable)")
    parser.add_argument("--quick", action="store_true", help="60 messages, 4 mailboxes (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.mailboxes = 60, 4

    logging.getLogger("outbox").setLevel(logging.INFO)
    counter = OutcomeCounter()
    logging.getLogger("outbox").addHandler(counter)
    host_values: dict[str, str] = {"OUTBOX_ALLOWED_SENDERS": f"*@{DOMAIN}"}
    if args.threads:
        host_values["PYTHON_THREADPOOL_THREAD_COUNT"] = str(args.threads)
    if args.slots:
        host_values["OUTBOX_SLOTS"] = args.slots
    for pair in args.set:
        name, _, value = pair.partition("=")
        host_values[name] = value
    overrides: dict[str, Any] = {}
    if args.batch:
        overrides["batch_size"] = args.batch
    if args.threshold is not None:
        overrides["new_batch_threshold"] = args.threshold
    boxes = _mailboxes(args.mailboxes)
    with tempfile.TemporaryDirectory() as state:
        harness = RemoteHarness(Path(state))
        try:
            fast = run(harness, counter, senders=boxes[:1], latency_ms=0, messages=args.messages,
                       host_values=host_values, queue_overrides=overrides, timeout_s=600)
            slow = run(harness, counter, senders=boxes, latency_ms=100, messages=args.messages,
                       host_values=host_values, queue_overrides=overrides, timeout_s=600)
        finally:
            harness.stop()
    ratio = slow["rate"] / fast["rate"] if fast["rate"] else 0.0
    load = os.getloadavg()[0]
    print(f"bench_mailboxes: one local host, {args.messages} messages per run, threads {fast['threads']}, "
          f"batchSize {fast['batch']} + newBatchThreshold {fast['threshold']} (load average {load:.1f} on "
          f"{os.cpu_count()} cores)")
    for name, r in (("1 mailbox, Graph 0 ms", fast), (f"{args.mailboxes} mailboxes, Graph 100 ms", slow)):
        cpu = f", {r['cpu_ms']:.1f} ms process CPU per message" if r["cpu_ms"] else ""
        if r["slot_ops"] and r["delivered"]:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(r["slot_ops"].items()))
            cpu += f"; slot-store operations {sum(r['slot_ops'].values()) / r['delivered']:.3f} per message ({ops})"
        print(f"  {name:<28} {r['rate']:6.1f} msgs/s ({r['delivered']} in {r['span_s']:.1f} s); 429s "
              f"{r['throttled']} of {r['requests']} Graph requests; deferred {r['deferred']}{cpu}")
    verdict = "OK" if ratio >= TARGET_RATIO and slow["throttled"] == 0 else "BELOW TARGET"
    print(f"SUMMARY mailboxes: {args.mailboxes} mailboxes at 100 ms reach {ratio:.0%} of 1 mailbox at 0 ms "
          f"({slow['rate']:.1f} vs {fast['rate']:.1f} msgs/s, target >= {TARGET_RATIO:.0%}, 429s "
          f"{slow['throttled']}): {verdict}")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    raise SystemExit(main())
