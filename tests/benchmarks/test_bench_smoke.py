"""The benchmarks still run (minimal sizes); their figures are printed by `make bench`, never asserted here.

What is asserted is what must hold whatever the machine's load: the scripts finish without a traceback,
print their summary, and outbox's pacing keeps one mailbox at 4 Graph requests in flight (no 429 in the
latency-bound run) and never above the budget the harness enforces.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode in (0, 1), output  # 1: a figure below its target on a busy machine
    return output


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_goodput_runs_the_whole_stack_in_a_minimal_mode() -> None:
    out = _bench("benchmarks.bench_goodput", "--quick", "--messages", "12", "--budget", "6", "--window-s", "1",
                 "--windows", "1")
    assert "SUMMARY goodput:" in out
    latency = re.search(r"latency-bound:.*?429s: (\d+) of (\d+) Graph requests.*?sent (\d+)", out, re.S)
    assert latency is not None, out
    assert latency.groups() == ("0", "12", "12")  # every message sent once, never a 5th request in flight
    budget = re.search(r"budget-bound:.*?\n.*?(\d+) deliveries in 1 window", out, re.S)
    assert budget is not None and 1 <= int(budget.group(1)) <= 6, out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_coldstart_reaches_a_first_send_in_a_fresh_process() -> None:
    out = _bench("benchmarks.bench_coldstart", "--quick")
    summary = re.search(r"SUMMARY coldstart: (\d+) ms to first send .* import function_app (\d+) ms", out)
    assert summary is not None, out
    assert int(summary.group(1)) > int(summary.group(2)) > 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_memory_measures_a_blob_upload_in_a_fresh_process() -> None:
    out = _bench("benchmarks.bench_memory", "--quick")
    line = re.search(r"10 MB attachment: (\w+) .*growth ([\d.]+) MB", out)
    assert line is not None and line.group(1) == "sent", out
    assert "SUMMARY memory:" in out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_mailboxes_compares_many_slow_mailboxes_with_one_fast_one() -> None:
    out = _bench("benchmarks.bench_mailboxes", "--quick")
    summary = re.search(r"SUMMARY mailboxes: 4 mailboxes at 100 ms reach \d+% .*429s (\d+)\)", out)
    assert summary is not None, out
    assert summary.group(1) == "0"  # pacing keeps every mailbox at 4 in flight: never a 429


def test_pipeline_benchmark_runs_against_its_in_memory_stores() -> None:
    # Its in-memory status store stands in for StatusStore: a changed claim signature must show here.
    out = _bench("benchmarks.bench_pipeline", "--no-azurite", "--messages", "50", "--rounds", "1")
    assert re.search(r"pipeline only\s+[\d.]+ ms/msg", out), out


def test_run_finds_every_benchmark_and_their_quick_flags() -> None:
    names = run.discover()
    assert {"bench_goodput", "bench_coldstart"} <= set(names)
    assert run.accepts_quick("bench_goodput") and run.accepts_quick("bench_coldstart")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_inbox_measures_the_paged_reads() -> None:
    out = _bench("benchmarks.bench_inbox", "--quick")
    assert re.search(r"SUMMARY inbox: page [\d.]+ ms, search [\d.]+ ms over 1000 deliveries", out), out


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ambiguous_run_loses_nothing_and_flags_every_second_copy() -> None:
    out = _bench("benchmarks.bench_ambiguous", "--messages", "30", "--ambiguous", "0.3")
    assert out.count("lost                         0") == 2, out
    assert out.count("every duplicate flagged      True") == 2, out


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_scaleout_shares_one_mailbox_between_two_host_processes() -> None:
    out = _bench("benchmarks.bench_scaleout", "--quick", "--messages", "16", "--instances", "2",
                 "--smtp-messages", "9")
    assert "SUMMARY scaleout (blob):" in out, out
    graph = re.search(r"graph, 2 host\(s\), slots blob:.*?429s: (\d+) of (\d+) Graph requests.*?"
                      r"attempts spent by throttling: (\d+).*?slot-store operations: (\d+)", out, re.S)
    assert graph is not None, out
    throttled, requests, burnt, ops = map(int, graph.groups())
    # The two processes share the mailbox's 4 slots through leases: never a 5th request in flight at Graph.
    assert (throttled, requests, burnt) == (0, 16, 0), out
    assert ops > 0, out  # the leases were really taken from the store
    smtp = re.search(r"432 4.3.2 replies \(a 4th connection sending\): (\d+); delivered (\d+)", out)
    assert smtp is not None and smtp.groups() == ("0", "9"), out
