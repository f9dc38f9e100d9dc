"""Goodput of one mailbox behind Outlook's limits, through the whole outbox stack.

    .venv/bin/python -m benchmarks.bench_goodput [--quick] [--messages N] [--windows K] [--budget N]
                                                 [--window-s S] [--variant NAME] [--threads N]
                                                 [--harness-in-process]

The anchor (reference/performance-anchors.md): one mailbox behind the harness's Outlook limits at 100 ms
latency reaches at least 95 % of min(4 / latency, request budget), with fewer than 1 % of requests
answered 429.

What runs: the harness (fake Entra, managed identity, Key Vault, Graph) in a process of its own
(``python -m harness up``, as Graph is a remote service: its latency must not depend on the worker's
GIL), with Graph's base latency set to 100 ms by the scenario (``[limits.graph] latency_ms``; the wait
holds the request's concurrency slot, as a slow real Graph does) and Outlook's limits on (4 requests in
flight per app + mailbox, a request budget per window); Azurite; and, in this process, the project's
local Functions host (``harness/localhost.py``) running the real ``function_app`` from ``main.py`` with
the project's own ``host.json`` (batchSize 8, newBatchThreshold 4, maxPollingInterval 2 s) and the
Python worker's default thread pool (``PYTHON_THREADPOOL_THREAD_COUNT`` unset: min(32, cores + 4)).
Each invocation is the production path: decode, validate, claim the status row in Azurite, Key Vault
certificate + MSAL token (first invocation), per-mailbox pacing, Graph sendMail, status row, queue
delete. M messages for one mailbox are enqueued (plain JSON) before the host starts.

Measured: messages per second from the harness's own delivery timestamps, Graph requests answered 429
(the harness's request counters), and what outbox did with the messages (its outcome events).

Variants:
- latency-bound: budget far above what a run can spend; ceiling 4 / 100 ms = 40 msgs/s. Rate = (deliveries
  - 4) / time from the first to the last delivery (conservative, see ``_rate``). Also runs a bare client against the same
  harness (4 threads over one keep-alive httpx.Client, token fetched once, no storage, no pacing): the
  floor this machine and the fake allow, to tell outbox's own loss from the machine's.
- budget-bound: 60 requests per 10 s per app + mailbox (harness) and the same budget told to outbox
  (``OUTBOX_GRAPH_BUDGET_REQUESTS`` / ``_WINDOW_S``, as production pairs 10,000 / 600 s with Graph's
  own); ceiling 6 msgs/s. A sliding window lets each window's budget out in a burst, so the rate is
  counted over whole windows: deliveries in [first delivery, first delivery + K windows) / (K windows).
- budget-unknown (full mode only, informational): the same Graph budget, but outbox keeps its default
  10,000 per 600 s, as one of several instances sharing a mailbox would: goodput then rests on the
  pause-after-429 path.
- budget-short-window (full mode only, informational): 20 requests per 2 s, told to outbox. The window
  is no longer than ``OUTBOX_PACING_MAX_WAIT_S``, so messages for the next window wait in process and
  leave the instant outbox's own window frees: the boundary case of every window (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SENDER = "sender@contoso.example"
LATENCY_MS = 100.0
CONCURRENCY = 4
TARGET_RATIO = 0.95
TARGET_429_SHARE = 0.01
HARNESS_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Variant:
    name: str
    budget: int
    window_s: float
    messages: int
    windows: int = 0  # > 0: count deliveries over this many whole windows (budget-bound)
    outbox_knows_budget: bool = True
    informational: bool = False  # outside the anchor: printed, not judged

    @property
    def ceiling_per_s(self) -> float:
        return min(CONCURRENCY / (LATENCY_MS / 1000.0), self.budget / self.window_s)

    @property
    def bound(self) -> str:
        latency_cap = CONCURRENCY / (LATENCY_MS / 1000.0)
        return "latency" if latency_cap <= self.budget / self.window_s else "budget"


@dataclass
class Result:
    variant: Variant
    delivered: int
    rate_per_s: float
    graph_requests: int
    throttled_429: int
    first_delivery_s: float
    outcomes: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    host_failed: int = 0
    threads: int = 0
    note: str = ""
    floor_per_s: float | None = None
    cpu_ms_per_msg: float | None = None

    @property
    def ratio(self) -> float:
        return self.rate_per_s / self.variant.ceiling_per_s

    @property
    def share_429(self) -> float:
        return self.throttled_429 / self.graph_requests if self.graph_requests else 0.0

    @property
    def ok(self) -> bool:
        return self.variant.informational or (self.ratio >= TARGET_RATIO and self.share_429 < TARGET_429_SHARE)


class OutcomeCounter(logging.Handler):
    """Counts outbox's outcome events (sent, deferred, retry...) and their codes; waitable."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.outcomes: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.sent_cpu: list[float] = []  # process CPU time at each "sent" (steady-state CPU per message)
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        dims = getattr(record, "custom_dimensions", None)
        if not isinstance(dims, dict) or "outcome" not in dims:
            return
        with self._cond:
            self.outcomes[str(dims["outcome"])] += 1
            if dims["outcome"] == "sent":
                self.sent_cpu.append(time.process_time())
            if dims.get("code"):
                self.codes[str(dims["code"])] += 1
            self._cond.notify_all()

    def wait_for(self, outcome: str, count: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.outcomes[outcome] >= count, timeout):
                raise TimeoutError(f"{self.outcomes[outcome]} of {count} '{outcome}' outcomes after {timeout} s")

    @classmethod
    def installed(cls) -> OutcomeCounter:
        """A counter on the ``outbox`` logger, which it alone hears (INFO), with the expected noise of a
        throttled run ("pausing it for 9 s") and of the local host silenced: the figures count it."""
        counter = cls()
        outbox_log = logging.getLogger("outbox")
        outbox_log.addHandler(counter)
        outbox_log.setLevel(logging.INFO)
        outbox_log.propagate = False
        logging.getLogger("shared").setLevel(logging.ERROR)
        logging.getLogger("harness.localhost").setLevel(logging.ERROR)
        return counter

    def reset(self) -> None:
        with self._cond:
            self.outcomes.clear()
            self.codes.clear()
            self.sent_cpu.clear()

    def steady_cpu_ms(self, skip: int = 20) -> float | None:
        """Process CPU per sent message after the first ``skip`` (set-up and ramp excluded)."""
        with self._cond:
            marks = self.sent_cpu[skip:]
        return (marks[-1] - marks[0]) * 1000 / (len(marks) - 1) if len(marks) > 1 else None


# -- the harness: in its own process (default) or in this one ------------------------------------------------


class RemoteHarness:
    """``python -m harness up`` in a child process, driven through its control API."""

    def __init__(self, state_dir: Path) -> None:
        from harness.client import HarnessClient

        self.state_dir = state_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "up", "--state", str(state_dir)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        info = state_dir / "harness.json"
        deadline = time.monotonic() + HARNESS_START_TIMEOUT_S
        while not info.exists():  # written atomically once every server (and Azurite) is up
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"harness did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.1)
        self.info = json.loads(info.read_text(encoding="utf-8"))
        self.control = HarnessClient(self.info["control"], ca_file=self.info["caBundle"])
        self.ca_bundle = self.info["caBundle"]

    def settings_values(self) -> dict[str, str]:
        data = json.loads((self.state_dir / "local.settings.json").read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in data["Values"].items()}

    def reset(self) -> None:
        self.control.reset()

    def apply_limits(self, graph_limits: dict[str, Any]) -> None:
        self.control.apply_scenario(patch={"limits": {"graph": graph_limits}})

    def clear_observations(self) -> None:
        self.control.reset(keep_scenario=True)

    def delivery_times(self) -> list[float]:
        return sorted(d.time for d in self.control.deliveries(transport="graph"))

    def graph_counts(self) -> tuple[int, int]:
        graph = self.control.requests().get("graph", {})
        return int(graph.get("total", 0)), int(graph.get("status:429", 0))

    def stop(self) -> None:
        if getattr(self, "control", None) is not None:
            self.control.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LocalHarness:
    """The same operations on an in-process ``Harness`` (``--harness-in-process``: one GIL for all)."""

    def __init__(self, state_dir: Path) -> None:
        from harness.scenario import Scenario
        from harness.up import Harness

        self.harness = Harness.start(Scenario.default(), state_dir, with_azurite=True)
        self.ca_bundle = str(self.harness.ca_bundle)

    def settings_values(self) -> dict[str, str]:
        return self.harness.settings_values()

    def reset(self) -> None:
        self.harness.reset()

    def apply_limits(self, graph_limits: dict[str, Any]) -> None:
        self.harness.apply_scenario({"limits": {"graph": graph_limits}})

    def clear_observations(self) -> None:
        self.harness.state.reset()

    def delivery_times(self) -> list[float]:
        return sorted(d.time for d in self.harness.state.deliveries(transport="graph"))

    def graph_counts(self) -> tuple[int, int]:
        return self.harness.state.count("graph"), self.harness.state.count("graph", "status:429")

    def stop(self) -> None:
        self.harness.stop()


# -- one variant ----------------------------------------------------------------------------------------------


def _message(variant: Variant, i: int) -> str:
    return json.dumps({
        "id": f"gp-{variant.name}-{i}-{uuid.uuid4().hex[:8]}",
        "from": SENDER,
        "to": [{"address": "ann@fabrikam.example", "name": "Ann"}],
        "subject": f"Goodput {i}",
        "text": "Hello Ann,\n\nyour order has shipped.\n",
    })


def _enqueue(queue: Any, bodies: list[str]) -> None:
    """Several producer threads: Azurite takes ~10 ms per operation."""
    chunks = [bodies[i::4] for i in range(4)]
    threads = [threading.Thread(target=lambda c=c: [queue.send_message(b) for b in c]) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _rate(times: list[float]) -> float:
    """Deliveries per second over a run of ``CONCURRENCY`` parallel slots.

    (n - 1) / span overestimates when the slots' requests end together (all four start at once: the first
    span holds n - 1 intervals of only n / 4 rounds); (n - 4) / span is exact then, and low by at most
    0.75 / rounds when the slots are spread out. The conservative one is used: never flatters outbox.
    """
    if len(times) <= CONCURRENCY:
        return 0.0
    return (len(times) - CONCURRENCY) / (times[-1] - times[0])


def _sleep_until(deadline: float) -> None:
    # A fixed measurement span (whole budget windows): there is no event to wait for.
    remaining = deadline - time.time()
    if remaining > 0:
        time.sleep(remaining)


def run_variant(harness: RemoteHarness | LocalHarness, variant: Variant, counter: OutcomeCounter, *,
                timeout_s: float, threads: int | None = None) -> Result:
    from azure.storage.queue import QueueServiceClient

    from harness.localhost import LocalHost

    harness.reset()
    harness.apply_limits({
        "latency_ms": LATENCY_MS,
        "concurrency": CONCURRENCY,
        "requests_per_window": variant.budget,
        "window_s": variant.window_s,
    })
    tag = uuid.uuid4().hex[:8]
    values = harness.settings_values()
    values.update({
        "OUTBOX_QUEUE": f"goodput-{tag}",
        "OUTBOX_STATUS_TABLE": f"goodput{tag}",
        "OUTBOX_ATTACHMENTS_CONTAINER": f"goodput-{tag}",
        "OUTBOX_GRAPH_CONCURRENCY": str(CONCURRENCY),
    })
    if variant.outbox_knows_budget:
        values["OUTBOX_GRAPH_BUDGET_REQUESTS"] = str(variant.budget)
        values["OUTBOX_GRAPH_BUDGET_WINDOW_S"] = str(variant.window_s)
    service = QueueServiceClient.from_connection_string(values["AzureWebJobsStorage"])
    queue = service.get_queue_client(values["OUTBOX_QUEUE"])
    queue.create_queue()
    _enqueue(queue, [_message(variant, i) for i in range(variant.messages)])
    harness.clear_observations()
    counter.reset()

    host = LocalHost(app_root=ROOT, values=values, http_port=None, thread_count=threads)
    started = time.time()
    host.start()
    try:
        if variant.windows:
            span = variant.windows * variant.window_s
            counter.wait_for("sent", 1, timeout_s)
            first = harness.delivery_times()[0]
            _sleep_until(first + span + 0.5)
            times = harness.delivery_times()
            counted = [t for t in times if first <= t < first + span]
            delivered = len(counted)
            rate = delivered / span
            note = (f"{delivered} deliveries in {variant.windows} window(s) of {variant.window_s:g} s "
                    f"from the first ({len(times)} in all)")
        else:
            counter.wait_for("sent", variant.messages, timeout_s)
            times = harness.delivery_times()
            first = times[0]
            delivered = len(times)
            rate = _rate(times)
            note = (f"{delivered} deliveries in {times[-1] - first:.2f} s; host start to last delivery "
                    f"{times[-1] - started:.2f} s = {delivered / (times[-1] - started):.1f} msgs/s with the cold start")
        cpu_ms = counter.steady_cpu_ms() if not variant.windows else None
        graph_requests, throttled = harness.graph_counts()
        pool = host.executor._max_workers  # what the worker's default pool size came to on this machine
    finally:
        host.stop()
        with contextlib.suppress(Exception):  # leftovers of a budget-bound run: not worth failing over
            queue.delete_queue()
        service.close()
    return Result(
        variant=variant,
        delivered=delivered,
        rate_per_s=rate,
        graph_requests=graph_requests,
        throttled_429=throttled,
        first_delivery_s=first - started,
        outcomes=Counter(counter.outcomes),
        codes=Counter(counter.codes),
        host_failed=host.stats.failed,
        threads=pool,
        note=note,
        cpu_ms_per_msg=cpu_ms,
    )


def bare_floor(harness: RemoteHarness | LocalHarness, count: int) -> float:
    """The same harness and latency with a bare client: 4 threads over one keep-alive httpx.Client, a token
    fetched once, no storage, no pacing. What this machine and the fake allow at 4 in flight."""
    import ssl

    import httpx

    from harness.up import identity_environment
    from shared.senders import Senders
    from shared.settings import load_settings

    values = harness.settings_values()
    settings = load_settings(values, require_storage=False)
    # Senders only to get a Graph token the way outbox does.
    with identity_environment(values), Senders.from_settings(settings) as senders:
        token = senders.tokens.token(settings.graph_scope).token
    harness.clear_observations()
    context = ssl.create_default_context(cafile=harness.ca_bundle)
    body = {"message": {"subject": "x", "body": {"contentType": "Text", "content": "y"},
                        "toRecipients": [{"emailAddress": {"address": "ann@fabrikam.example"}}]}}
    url = f"/v1.0/users/{SENDER}/sendMail"
    with httpx.Client(base_url=values["OUTBOX_GRAPH_URL"], verify=context,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        per_thread = count // CONCURRENCY

        def worker() -> None:
            for _ in range(per_thread):
                client.post(url, json=body).raise_for_status()

        threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return _rate(harness.delivery_times())


# -- report -----------------------------------------------------------------------------------------------------


def report(result: Result) -> None:
    v = result.variant
    verdict = "(informational)" if v.informational else "OK" if result.ok else "MISSES TARGET"
    told = "" if v.outbox_knows_budget else "; outbox NOT told the budget (its default 10,000 per 600 s)"
    print(f"{v.name}: {v.messages} messages, one mailbox, Graph latency {LATENCY_MS:g} ms, "
          f"{CONCURRENCY} in flight, budget {v.budget} per {v.window_s:g} s ({v.bound}-bound{told})")
    print(f"  goodput {result.rate_per_s:.1f} msgs/s = {result.ratio:.1%} of min(4/latency, budget/window) = "
          f"{v.ceiling_per_s:g}/s (target >= {TARGET_RATIO:.0%})  {verdict}")
    print(f"  429s: {result.throttled_429} of {result.graph_requests} Graph requests = {result.share_429:.2%} "
          f"(target < {TARGET_429_SHARE:.0%})")
    print(f"  {result.note}; first delivery {result.first_delivery_s:.2f} s after the host started")
    if result.floor_per_s:
        print(f"  bare httpx floor, same harness and latency, 4 threads, no storage or pacing: "
              f"{result.floor_per_s:.1f} msgs/s = {result.floor_per_s / v.ceiling_per_s:.1%} of the ceiling; "
              f"outbox reaches {result.rate_per_s / result.floor_per_s:.1%} of the floor")
    outcomes = ", ".join(f"{k} {n}" for k, n in sorted(result.outcomes.items())) or "none"
    codes = ", ".join(f"{k} {n}" for k, n in sorted(result.codes.items()))
    print(f"  outbox outcomes: {outcomes}{f' (codes: {codes})' if codes else ''}; "
          f"failed invocations {result.host_failed}; worker threads {result.threads}")
    if result.cpu_ms_per_msg is not None:
        busy = result.cpu_ms_per_msg * result.rate_per_s / 10
        print(f"  worker process CPU {result.cpu_ms_per_msg:.1f} ms per message in steady state (host polling, "
              f"storage SDK, pipeline, transport): one GIL busy ~{busy:.0f} % of the time at this rate")


def variants(args: argparse.Namespace) -> list[Variant]:
    latency_msgs = args.messages or (120 if args.quick else 400)
    windows = args.windows or (1 if args.quick else 2)
    window_s = args.window_s or (5.0 if args.quick else 10.0)
    budget = args.budget or (30 if args.quick else 60)
    backlog = budget * (windows + 1) + 20  # the queue must not run dry inside the counted windows
    found = [
        Variant("latency-bound", budget=10**6, window_s=600.0, messages=latency_msgs),
        Variant("budget-bound", budget=budget, window_s=window_s, messages=backlog, windows=windows),
    ]
    if not args.quick:
        # What one of several instances sees: Graph's budget is shared, outbox's pacing is per process.
        found.append(Variant("budget-unknown", budget=budget, window_s=window_s, messages=backlog,
                             windows=windows, outbox_knows_budget=False, informational=True))
        # A window no longer than OUTBOX_PACING_MAX_WAIT_S (2 s): the next window's messages wait in
        # process and go the instant outbox's window frees, which is what happens at every boundary of
        # Graph's 600 s window for messages arriving in its last 2 s.
        found.append(Variant("budget-short-window", budget=20, window_s=2.0, messages=20 * 5 + 20, windows=4,
                             informational=True))
    return [v for v in found if args.variant in (None, v.name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, one short window (smoke / make bench)")
    parser.add_argument("--messages", type=int, default=0, help="messages in the latency-bound run")
    parser.add_argument("--windows", type=int, default=0, help="budget windows counted in the budget-bound runs")
    parser.add_argument("--budget", type=int, default=0, help="requests per window in the budget-bound runs (60)")
    parser.add_argument("--window-s", type=float, default=0.0, help="the budget window in seconds (10)")
    parser.add_argument("--variant", default=None,
                        choices=("latency-bound", "budget-bound", "budget-unknown", "budget-short-window"))
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads (PYTHON_THREADPOOL_THREAD_COUNT); default: the worker's own default")
    parser.add_argument("--harness-in-process", action="store_true",
                        help="run the harness in this process (shares the GIL with the worker threads)")
    args = parser.parse_args(argv)

    counter = OutcomeCounter.installed()

    load = os.getloadavg()
    where = "in this process" if args.harness_in_process else "in its own process"
    print(f"bench_goodput: harness {where} + Azurite + local Functions host running function_app; "
          f"load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    results = []
    with tempfile.TemporaryDirectory() as state:
        harness: RemoteHarness | LocalHarness = (LocalHarness if args.harness_in_process else RemoteHarness)(Path(state))
        try:
            for variant in variants(args):
                result = run_variant(harness, variant, counter, timeout_s=120.0, threads=args.threads)
                if not variant.windows:
                    result.floor_per_s = bare_floor(harness, variant.messages)
                results.append(result)
                report(result)
        finally:
            harness.stop()
    def brief(r: Result) -> str:
        floor = (f" (bare-client floor {r.floor_per_s / r.variant.ceiling_per_s:.0%}: outbox "
                 f"{r.rate_per_s / r.floor_per_s:.0%} of it)") if r.floor_per_s else ""
        info = " (info)" if r.variant.informational else ""
        return f"{r.variant.name} {r.ratio:.0%} of ceiling{floor}, 429 {r.share_429:.1%}{info}"

    summary = "; ".join(brief(r) for r in results)
    print(f"SUMMARY goodput: {summary} (targets >= 95 %, < 1 %)")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
