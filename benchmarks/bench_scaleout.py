"""Several instances on one queue and one mailbox: do they share Outlook's limits instead of fighting?

    .venv/bin/python -m benchmarks.bench_scaleout [--quick] [--messages N] [--instances 1,2,4]
                                                  [--slots blob|local] [--smtp-messages N] [--no-smtp]

The question (issue 11): N local Functions hosts, each a process of its own (``python -m
benchmarks.bench_scaleout --child``: the real ``function_app`` under ``harness.localhost.LocalHost`` with
the project's host.json), drain one queue of mail for one mailbox against one harness (its own process,
Graph at 100 ms latency and 4 requests in flight per app + mailbox, budget out of reach; a fresh harness
and Azurite for every run, since Azurite's 60-s queue GC stalls it for seconds once a few thousand
messages have been consumed). With the slots
shared through blob leases (OUTBOX_SLOTS=blob, the default) every N should keep the mailbox at its
4-in-flight limit: goodput >= 90 % of 4 / latency, < 1 % of Graph requests answered 429, no attempt spent
by throttling. ``--slots local`` runs the same with the per-process count (the state before issue 11).

Printed per N: goodput as a share of 4 / latency (rate = (deliveries - 4) / (last - first delivery), as
bench_goodput), Graph requests answered 429 (the harness's counters), attempts spent by throttling
(the status rows: attempts beyond one per message, and the throttled tries they recorded), and the
storage operations the slot store added per message (list, acquire, renew, release, ...; each host
counts its own and reports them when it stops).

Budget-bound (unless ``--no-budget`` or ``--quick``): 4 hosts while Graph allows 60 requests per 10 s per
app + mailbox, and outbox is told the same (OUTBOX_GRAPH_BUDGET_REQUESTS / _WINDOW_S): with the budget
shared through the slot store the hosts together should reach >= 95 % of 6/s with < 1 % 429; with
``--slots local`` each host keeps its own (each told 60, then a static 60 / 4), for comparison.

SMTP (unless ``--no-smtp``): 3 hosts send one mailbox's mail over SMTP; Exchange allows 3 connections
per mailbox and answers a 4th session's DATA with 432 4.3.2 (the harness does the same): the count of
432 replies must be 0 and every message delivered.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_goodput import (
    CONCURRENCY,
    LATENCY_MS,
    SENDER,
    OutcomeCounter,
    RemoteHarness,
    _enqueue,
    _rate,
)

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.90
EXTRA_VALUES: dict[str, str] = {}  # --set NAME=VALUE: app settings for every host (to try a setting's effect)
TARGET_429_SHARE = 0.01
TARGET_BUDGET_RATIO = 0.95
CEILING = CONCURRENCY / (LATENCY_MS / 1000.0)
BUDGET_WINDOW_S = 10.0
BUDGET_WINDOWS = 2
GAP_S = 0.2  # 4 in flight at 100 ms deliver every ~25 ms: a pause this long means the mailbox sat idle


@dataclass
class Run:
    transport: str
    instances: int
    slots: str
    messages: int
    delivered: int = 0
    rate: float = 0.0
    mid_rate: float = 0.0  # the middle 80 % of deliveries: without the start and the last stragglers
    gaps: list[float] = field(default_factory=list)  # pauses between deliveries longer than GAP_S
    requests: int = 0
    throttled: int = 0
    attempts_burnt: int = 0
    throttled_tries: int = 0
    slot_ops: Counter[str] = field(default_factory=Counter)
    store_failures: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    smtp_432: int = 0
    sessions: int = 0
    failed: int = 0
    budget: int = 0  # > 0: the budget-bound variant (requests per BUDGET_WINDOW_S at the harness)
    outbox_budget: int = 0  # what each host was told (OUTBOX_GRAPH_BUDGET_REQUESTS)

    @property
    def ceiling(self) -> float:
        return self.budget / BUDGET_WINDOW_S if self.budget else CEILING

    @property
    def ratio(self) -> float:
        return self.rate / self.ceiling

    @property
    def share_429(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0

    @property
    def ops_per_message(self) -> float:
        return sum(self.slot_ops.values()) / self.delivered if self.delivered else 0.0

    @property
    def ok(self) -> bool:
        if self.transport == "smtp":
            return self.smtp_432 == 0 and self.delivered == self.messages
        if self.slots != "blob":
            return True  # the old behaviour, for comparison: not judged
        if self.budget:
            return self.ratio >= TARGET_BUDGET_RATIO and self.share_429 < TARGET_429_SHARE
        return (self.ratio >= TARGET_RATIO and self.share_429 < TARGET_429_SHARE and self.attempts_burnt == 0
                and self.delivered == self.messages)


# -- a child: one local Functions host in this process until stdin closes ----------------------------------------


def child(settings_file: str) -> int:
    from harness.localhost import LocalHost

    counter = OutcomeCounter.installed()
    host = LocalHost(app_root=ROOT, settings_file=settings_file, http_port=None)
    host.start()
    print("started", flush=True)
    sys.stdin.read()  # the parent closes our stdin when the run is over
    from function_app import runtime as app_runtime

    current = app_runtime._current
    slots = current.stores.slots if current is not None else None
    senders = current.senders if current is not None else None
    smtp = senders._transports.get("smtp") if senders is not None else None
    host.stop()  # releases the leases: counted below
    ops: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    if slots is not None:
        ops.update(slots.graph.operations())
        ops.update({f"smtp_{k}": v for k, v in slots.smtp.operations().items()})
        failures.update(slots.graph.failures)
        failures.update(slots.smtp.failures)
        if slots.graph_budget is not None:
            budget = slots.graph_budget
            ops.update({f"budget_{k}": v for k, v in budget.operations().items()})
            failures.update(getattr(budget, "failures", {}))
    print(json.dumps({"outcomes": dict(counter.outcomes), "codes": dict(counter.codes), "slot_ops": dict(ops),
                      "store_failures": dict(failures),
                      "sessions": getattr(smtp, "sessions_opened", 0), "failed": host.stats.failed}), flush=True)
    return 0


# -- the parent ----------------------------------------------------------------------------------------------------


def _message(tag: str, i: int, transport: str) -> str:
    return json.dumps({"id": f"so-{tag}-{i}", "from": SENDER, "transport": transport,
                       "to": [{"address": "ann@fabrikam.example", "name": "Ann"}], "subject": f"Scale-out {i}",
                       "text": "Hello Ann,\n\nyour order has shipped.\n"})


def _wait_delivered(harness: RemoteHarness, transport: str, count: int, timeout_s: float,
                    hosts: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + timeout_s
    while len(harness.control.deliveries(transport=transport)) < count:
        dead = [h for h in hosts if h.poll() is not None]
        if dead or time.monotonic() > deadline:
            got = len(harness.control.deliveries(transport=transport))
            raise TimeoutError(f"{got} of {count} delivered; {len(dead)} host(s) exited")
        time.sleep(0.25)  # polling the harness's deliveries: nothing to wait on across processes


def run(harness: RemoteHarness, *, transport: str, instances: int, slots: str, messages: int,
        timeout_s: float, budget: int = 0, outbox_budget: int = 0) -> Run:
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    harness.reset()
    patch: dict[str, Any] = {"limits": {
        "graph": {"latency_ms": LATENCY_MS, "concurrency": CONCURRENCY, "requests_per_window": budget or 10**6,
                  "window_s": BUDGET_WINDOW_S if budget else 600},
        # SMTP: Exchange's 3 connections per mailbox; the message rate out of the way (the question is the
        # connection count, not the 30 a minute).
        "smtp": {"connections_per_mailbox": 3, "messages_per_window": 10**6, "window_s": 60, "latency_ms": 5},
    }}
    harness.control.apply_scenario(patch=patch)
    tag = uuid.uuid4().hex[:8]
    values = harness.settings_values()
    values.update({
        "OUTBOX_QUEUE": f"so-{tag}", "OUTBOX_STATUS_TABLE": f"so{tag}", "OUTBOX_ATTACHMENTS_CONTAINER": f"so-{tag}",
        "OUTBOX_SLOTS": slots, "OUTBOX_SLOTS_CONTAINER": f"so-slots-{tag}", "OUTBOX_EXPECTED_INSTANCES": str(instances),
        "OUTBOX_SMTP_RATE_PER_WINDOW": str(10**6), **EXTRA_VALUES,
    })
    if budget:
        values.update({"OUTBOX_GRAPH_BUDGET_REQUESTS": str(outbox_budget or budget),
                       "OUTBOX_GRAPH_BUDGET_WINDOW_S": str(BUDGET_WINDOW_S)})
    with tempfile.TemporaryDirectory() as folder:
        settings_file = Path(folder) / "local.settings.json"
        settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
        service = QueueServiceClient.from_connection_string(values["AzureWebJobsStorage"])
        queue = service.get_queue_client(values["OUTBOX_QUEUE"])
        queue.create_queue()
        _enqueue(queue, [_message(tag, i, transport) for i in range(messages)])
        harness.clear_observations()
        hosts = [subprocess.Popen([sys.executable, "-m", "benchmarks.bench_scaleout", "--child", str(settings_file)],
                                  cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  start_new_session=True) for _ in range(instances)]
        reports: list[dict[str, Any]] = []
        try:
            for h in hosts:
                assert h.stdout is not None
                if h.stdout.readline().strip() != "started":
                    raise RuntimeError("a local host did not start")
            if budget:
                # Whole budget windows from the first delivery: a fixed span, nothing to wait on.
                _wait_delivered(harness, transport, 1, timeout_s, hosts)
                first = min(d.time for d in harness.control.deliveries(transport=transport))
                time.sleep(max(0.0, first + BUDGET_WINDOWS * BUDGET_WINDOW_S + 0.5 - time.time()))
            else:
                _wait_delivered(harness, transport, messages, timeout_s, hosts)
            times = sorted(d.time for d in harness.control.deliveries(transport=transport))
            counters = harness.control.requests()
        finally:
            for h in hosts:
                with contextlib.suppress(Exception):
                    assert h.stdin is not None
                    h.stdin.close()
            for h in hosts:
                assert h.stdout is not None
                out = h.stdout.read()  # the child's report, written as it stops
                try:
                    h.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    h.kill()
                    h.wait()
                lines = [line for line in out.splitlines() if line.startswith("{")]
                if lines:
                    reports.append(json.loads(lines[-1]))
        table = TableServiceClient.from_connection_string(values["AzureWebJobsStorage"]).get_table_client(
            values["OUTBOX_STATUS_TABLE"])
        rows = list(table.list_entities())
        with contextlib.suppress(Exception):
            queue.delete_queue()
            table.delete_table()
        service.close()
    result = Run(transport, instances, slots, messages, delivered=len(times), budget=budget,
                 outbox_budget=outbox_budget or budget)
    result.rate = _rate(times) if transport == "graph" else (
        (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0)
    if budget and times:
        span = BUDGET_WINDOWS * BUDGET_WINDOW_S
        result.rate = len([t for t in times if t < times[0] + span]) / span
    result.gaps = [b - a for a, b in itertools.pairwise(times) if b - a > GAP_S]
    lo, hi = len(times) // 10, len(times) - len(times) // 10 - 1
    result.mid_rate = (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] else 0.0
    graph = counters.get("graph", {})
    result.requests, result.throttled = int(graph.get("total", 0)), int(graph.get("status:429", 0))
    smtp = counters.get("smtp", {})
    result.smtp_432 = sum(int(n) for k, n in smtp.items() if k.endswith(":432"))
    result.attempts_burnt = sum(max(0, int(r.get("Attempts") or 0) - 1) for r in rows if r.get("State") == "sent")
    result.throttled_tries = sum(int(r.get("Throttled") or 0) for r in rows)
    for rep in reports:
        result.slot_ops.update(rep.get("slot_ops", {}))
        result.store_failures.update(rep.get("store_failures", {}))
        result.outcomes.update(rep.get("outcomes", {}))
        result.codes.update(rep.get("codes", {}))
        result.sessions += int(rep.get("sessions", 0))
        result.failed += int(rep.get("failed", 0))
    return result


def report(r: Run) -> None:
    verdict = "(comparison, not judged)" if r.slots != "blob" and r.transport == "graph" else (
        "OK" if r.ok else "MISSES TARGET")
    ops = ", ".join(f"{k} {n}" for k, n in sorted(r.slot_ops.items())) or "none"
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(r.outcomes.items())) or "none"
    codes = ", ".join(f"{k} {n}" for k, n in sorted(r.codes.items()))
    if r.budget:
        shared = "shared by the hosts" if r.slots == "blob" else "each host's own"
        verdict = "(comparison, not judged)" if r.slots != "blob" else "OK" if r.ok else "MISSES TARGET"
        print(f"graph budget-bound, {r.instances} host(s), slots {r.slots}: Graph allows {r.budget} requests per "
              f"{BUDGET_WINDOW_S:g} s per app + mailbox; OUTBOX_GRAPH_BUDGET_REQUESTS {r.outbox_budget} ({shared})")
        print(f"  goodput {r.rate:.2f} msgs/s over {BUDGET_WINDOWS} windows = {r.ratio:.1%} of the budget rate "
              f"{r.ceiling:g}/s (target >= {TARGET_BUDGET_RATIO:.0%})  {verdict}; 429s: {r.throttled} of "
              f"{r.requests} Graph requests = {r.share_429:.2%} (target < {TARGET_429_SHARE:.0%})")
    elif r.transport == "graph":
        print(f"graph, {r.instances} host(s), slots {r.slots}: {r.messages} messages, one mailbox, Graph "
              f"{LATENCY_MS:g} ms, {CONCURRENCY} in flight")
        print(f"  goodput {r.rate:.1f} msgs/s = {r.ratio:.1%} of 4/latency = {CEILING:g}/s (target >= "
              f"{TARGET_RATIO:.0%})  {verdict}; middle 80 % of deliveries {r.mid_rate:.1f} msgs/s = "
              f"{r.mid_rate / CEILING:.1%}")
        print(f"  429s: {r.throttled} of {r.requests} Graph requests = {r.share_429:.2%} (target < "
              f"{TARGET_429_SHARE:.0%}); pauses over {GAP_S:g} s between deliveries: {len(r.gaps)}, "
              f"{sum(r.gaps):.1f} s in all (longest {max(r.gaps, default=0):.2f} s)")
    else:
        print(f"smtp, {r.instances} host(s), slots {r.slots}: {r.messages} messages, one mailbox (Exchange: 3 "
              f"connections)")
        print(f"  432 4.3.2 replies (a 4th connection sending): {r.smtp_432}; delivered {r.delivered}; "
              f"connections opened {r.sessions}; {r.rate:.1f} msgs/s  {verdict}")
    print(f"  attempts spent by throttling: {r.attempts_burnt} (throttled tries recorded: {r.throttled_tries})")
    failures = ", ".join(f"{k} {n}" for k, n in sorted(r.store_failures.items())) or "none"
    print(f"  slot-store operations: {sum(r.slot_ops.values())} = {r.ops_per_message:.3f} per message ({ops}); "
          f"times a host fell back to the safe share: {sum(r.store_failures.values())} ({failures})")
    print(f"  outbox outcomes: {outcomes}{f' (codes: {codes})' if codes else ''}; failed invocations {r.failed}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="SETTINGS", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="120 messages, N = 1 and 2, 30 SMTP messages, no budget run")
    parser.add_argument("--messages", type=int, default=0, help="Graph messages per run (600)")
    parser.add_argument("--instances", default="", help="comma list of host counts (1,2,4)")
    parser.add_argument("--slots", choices=("blob", "local"), default="blob")
    parser.add_argument("--smtp-messages", type=int, default=0, help="SMTP messages for 3 hosts (90)")
    parser.add_argument("--no-smtp", action="store_true")
    parser.add_argument("--no-budget", action="store_true",
                        help="skip the budget-bound variant (4 hosts, Graph allows 60 per 10 s; with --slots local "
                        "also each host told a static 60 / 4)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an app setting for every host, e.g. OUTBOX_SLOT_IDLE_S=1 (repeatable)")
    args = parser.parse_args(argv)
    for pair in args.set:
        name, _, value = pair.partition("=")
        EXTRA_VALUES[name] = value
    if args.child:
        return child(args.child)
    messages = args.messages or (120 if args.quick else 600)
    counts = [int(n) for n in (args.instances or ("1,2" if args.quick else "1,2,4")).split(",") if n.strip()]
    smtp_messages = args.smtp_messages or (30 if args.quick else 90)
    if args.quick:
        args.no_budget = True

    load = os.getloadavg()
    print(f"bench_scaleout: N local hosts (separate processes) on one queue and one mailbox + harness in its own "
          f"process + Azurite; load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    plans: list[dict[str, Any]] = [
        {"transport": "graph", "instances": n, "messages": messages} for n in counts]
    if not args.no_budget:
        plans += [{"transport": "graph", "instances": 4, "messages": 60 * (BUDGET_WINDOWS + 1) + 20, "budget": 60,
                   "outbox_budget": told} for told in ((60,) if args.slots == "blob" else (60, 60 // 4))]
    if not args.no_smtp:
        plans.append({"transport": "smtp", "instances": 3, "messages": smtp_messages})
    results: list[Run] = []
    for plan in plans:
        # A fresh harness (and Azurite) for every run: Azurite's queue GC marks and sweeps every 60 s, and
        # deleting the extents of the messages a run consumed stops every Azurite service for seconds
        # (quadratic in their number; docs/benchmarks.md). Azure Storage has no such pause.
        with tempfile.TemporaryDirectory() as state:
            harness = RemoteHarness(Path(state))
            try:
                result = run(harness, slots=args.slots, timeout_s=300, **plan)
            finally:
                harness.stop()
        results.append(result)
        report(result)

    def brief(r: Run) -> str:
        if r.transport == "smtp":
            return f"smtp x{r.instances} 432s {r.smtp_432}"
        if r.budget:
            return f"budget x{r.instances} ({r.outbox_budget}) {r.ratio:.0%} of budget rate, 429 {r.share_429:.1%}"
        return (f"x{r.instances} {r.ratio:.0%} of 4/latency, 429 {r.share_429:.1%}, attempts burnt "
                f"{r.attempts_burnt}, {r.ops_per_message:.2f} slot ops/msg")

    print(f"SUMMARY scaleout ({args.slots}): " + "; ".join(brief(r) for r in results)
          + " (targets >= 90 %, < 1 %, 0; budget >= 95 %, < 1 %; smtp 0)")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
