"""Throughput of the harness's own Graph and SMTP fakes, so they are never the bottleneck a benchmark measures.

    .venv/bin/python -m benchmarks.bench_fakes [--graph N] [--smtp N] [--rounds R]

Graph: sequential sendMail over one keep-alive httpx (sync) client with a cached token, TLS with the test CA.
SMTP: messages over one reused smtplib session (STARTTLS + AUTH XOAUTH2 once).

The fakes run in a full in-process harness (limits raised out of the way). Each workload is measured twice:
- client in another process (``multiprocessing`` spawn): the fakes' own throughput, as a separate
  ``python -m harness up`` serves outbox; the targets apply to this figure;
- client in the harness's process (a thread), as pytest uses the harness: both then share one GIL.
Server CPU is the CPU time of the service host's loop thread (``time.thread_time`` read on that thread).
Medians of ``--rounds`` rounds; the load average is printed because these machines are shared.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import smtplib
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx

from harness.scenario import Scenario
from harness.up import Harness

GRAPH_TARGET_PER_S = 500.0
SMTP_TARGET_PER_S = 200.0
SENDER = "sender@contoso.example"
UNLIMITED = {
    "limits": {
        "graph": {"requests_per_window": 10**9, "concurrency": 64},
        "smtp": {"messages_per_window": 10**9, "recipients_per_day": 10**9},
    }
}


@dataclass(frozen=True)
class Target:
    """What a client needs to reach the fakes (picklable, for the child process)."""

    graph_url: str
    smtp_host: str
    smtp_port: int
    ca_file: str
    graph_token: str
    smtp_token: str


@dataclass(frozen=True)
class Round:
    count: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s


# -- client workloads (run in a thread or in a child process) -------------------------------------------


def _timed(count: int, rounds: int, one: Callable[[], None], between: Callable[[], None]) -> list[tuple[float, float]]:
    one()  # connection, TLS, token verification: out of the measurement
    results = []
    for _ in range(rounds):
        between()
        cpu = time.thread_time()
        started = time.perf_counter()
        for _ in range(count):
            one()
        results.append((time.perf_counter() - started, time.thread_time() - cpu))
    return results


def graph_client(target: Target, count: int, rounds: int, between: Callable[[], None]) -> list[tuple[float, float]]:
    body = {
        "message": {
            "subject": "benchmark",
            "body": {"contentType": "Text", "content": "hello"},
            "toRecipients": [{"emailAddress": {"address": "to@fabrikam.example"}}],
        },
        "saveToSentItems": True,
    }
    url = f"/v1.0/users/{SENDER}/sendMail"
    context = ssl.create_default_context(cafile=target.ca_file)
    with httpx.Client(
        base_url=target.graph_url, verify=context, headers={"Authorization": f"Bearer {target.graph_token}"}
    ) as client:

        def one() -> None:
            response = client.post(url, json=body)
            if response.status_code != 202:
                raise RuntimeError(f"sendMail answered {response.status_code}: {response.text}")

        return _timed(count, rounds, one, between)


def smtp_client(target: Target, count: int, rounds: int, between: Callable[[], None]) -> list[tuple[float, float]]:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "to@fabrikam.example"
    message["Subject"] = "benchmark"
    message.set_content("hello")
    raw = message.as_bytes()
    client = smtplib.SMTP(target.smtp_host, target.smtp_port)
    try:
        client.starttls(context=ssl.create_default_context(cafile=target.ca_file))
        client.ehlo()
        client.auth("XOAUTH2", lambda challenge=None: f"user={SENDER}\x01auth=Bearer {target.smtp_token}\x01\x01")
        return _timed(count, rounds, lambda: client.sendmail(SENDER, ["to@fabrikam.example"], raw), between)
    finally:
        client.quit()


WORKLOADS: dict[str, Callable[..., list[tuple[float, float]]]] = {"graph": graph_client, "smtp": smtp_client}


def _child(name: str, target: Target, count: int, rounds: int, ready: Any, go: Any, out: Any) -> None:
    def between() -> None:
        ready.set()  # tell the parent to read the server clock, then wait for its go
        go.wait()
        go.clear()

    out.send(WORKLOADS[name](target, count, rounds, between))
    ready.set()


# -- measurement ----------------------------------------------------------------------------------------


def run_in_thread(harness: Harness, name: str, target: Target, count: int, rounds: int) -> list[Round]:
    host = harness.runtime.host
    marks: list[float] = []

    def between() -> None:
        harness.state.reset()
        marks.append(host.call(time.thread_time))

    timings = WORKLOADS[name](target, count, rounds, between)
    marks.append(host.call(time.thread_time))
    return [Round(count, wall, cpu, marks[i + 1] - marks[i]) for i, (wall, cpu) in enumerate(timings)]


def run_in_child(harness: Harness, name: str, target: Target, count: int, rounds: int) -> list[Round]:
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(name, target, count, rounds, ready, go, sender))
    child.start()
    host = harness.runtime.host
    marks = []
    try:
        for _ in range(rounds + 1):
            if not ready.wait(300):
                raise RuntimeError(f"{name} client did not report")
            ready.clear()
            harness.state.reset()
            marks.append(host.call(time.thread_time))
            go.set()
        timings = receiver.recv()
    finally:
        child.join(60)
    return [Round(count, wall, cpu, marks[i + 1] - marks[i]) for i, (wall, cpu) in enumerate(timings)]


def report(label: str, results: list[Round], target: float | None) -> float:
    per_s = statistics.median(r.per_s for r in results)
    server_ms = statistics.median(1000 * r.server_cpu_s / r.count for r in results)
    client_ms = statistics.median(1000 * r.client_cpu_s / r.count for r in results)
    runs = ", ".join(f"{r.per_s:,.0f}" for r in results)
    line = (
        f"{label:<44} {per_s:>7,.0f}/s  (rounds {runs})  server CPU {server_ms:.2f} ms/msg "
        f"(capacity ~{1000 / server_ms:,.0f}/s), client CPU {client_ms:.2f} ms/msg"
    )
    if target is not None:
        line += f"  target >= {target:,.0f}/s  ratio {per_s / target:.1f}x"
    print(line)
    return per_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--graph", type=int, default=2000, help="sendMail requests per round")
    parser.add_argument("--smtp", type=int, default=1000, help="SMTP messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    scenario = Scenario.default().with_changes(UNLIMITED)
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as state, Harness.start(scenario, state) as harness:
        smtp = harness.endpoints["smtp"]
        target = Target(
            graph_url=harness.url("graph"),
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            ca_file=str(harness.ca_bundle),
            graph_token=harness.mint_token("graph"),
            smtp_token=harness.mint_token("exchange"),
        )
        graph = report("Graph sendMail, httpx keep-alive, other process",
                       run_in_child(harness, "graph", target, args.graph, args.rounds), GRAPH_TARGET_PER_S)
        report("Graph sendMail, httpx keep-alive, same process",
               run_in_thread(harness, "graph", target, args.graph, args.rounds), None)
        mail = report("SMTP, smtplib one session, other process",
                      run_in_child(harness, "smtp", target, args.smtp, args.rounds), SMTP_TARGET_PER_S)
        report("SMTP, smtplib one session, same process",
               run_in_thread(harness, "smtp", target, args.smtp, args.rounds), None)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = graph >= GRAPH_TARGET_PER_S and mail >= SMTP_TARGET_PER_S
    print("fakes fast enough" if ok else "FAKES BELOW TARGET (check the load average: the machine is shared)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
