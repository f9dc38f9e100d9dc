"""Run every benchmark in ``benchmarks/`` in turn and summarise the figures against their targets.

    .venv/bin/python -m benchmarks.run [--quick] [--only NAME ...] [--skip NAME ...]

This is what ``make bench`` calls. Each ``benchmarks/bench_*.py`` runs as ``python -m benchmarks.NAME`` in a
process of its own (one after another: they measure CPU and latency, so they must not overlap), with
``--quick`` passed to the scripts that accept it when ``--quick`` is given. Their output is shown as it
comes; at the end a summary lists each script's time, its status and its lines about targets.

Benchmarks print figures; they do not fail a build on a slow machine. The exit status is 1 only when a
script crashed (a traceback, a timeout) or none ran; a script that reports a figure below its target
(exit status 1 without a traceback) is listed as "below target".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT_TIMEOUT_S = 900
# Lines worth repeating in the summary: explicit summaries, and lines that compare with a target/budget.
KEY_LINE = re.compile(r"^SUMMARY|target|budget|BELOW|OVER|MISSES", re.IGNORECASE)


@dataclass
class Outcome:
    name: str
    status: str
    seconds: float
    key_lines: list[str] = field(default_factory=list)


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def accepts_quick(name: str) -> bool:
    return '"--quick"' in (HERE / f"{name}.py").read_text(encoding="utf-8")


def run_one(name: str, *, quick: bool) -> Outcome:
    command = [sys.executable, "-m", f"benchmarks.{name}"]
    if quick and accepts_quick(name):
        command.append("--quick")
    print(f"\n=== {' '.join(['python', *command[1:]])}  (load average {os.getloadavg()[0]:.1f})", flush=True)
    started = time.monotonic()
    lines: list[str] = []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    assert proc.stdout is not None
    watchdog = threading.Timer(SCRIPT_TIMEOUT_S, proc.kill)  # a hung script must not hang `make bench`
    watchdog.start()
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        watchdog.cancel()
    seconds = time.monotonic() - started
    crashed = any(line.startswith("Traceback (most recent call last)") for line in lines)
    if rc == 0:
        status = "ok"
    elif rc == 1 and not crashed:
        status = "below target"
    else:
        status = f"ERROR (exit {rc}{', timed out' if seconds > SCRIPT_TIMEOUT_S else ''})"
    # A script's own SUMMARY lines say it best; otherwise the lines that compare with a target.
    key = [line.strip() for line in lines if line.startswith("SUMMARY")]
    if not key:
        key = [line.strip() for line in lines if KEY_LINE.search(line) and not line.startswith(("  File ", "Traceback"))]
    if not key:
        key = [line.strip() for line in lines if line.strip()][-3:]
    return Outcome(name, status, seconds, key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to the benchmarks that have it")
    parser.add_argument("--only", nargs="+", default=None, help="run only these (e.g. bench_goodput)")
    parser.add_argument("--skip", nargs="+", default=(), help="skip these")
    args = parser.parse_args(argv)

    names = [n for n in discover() if (args.only is None or n in args.only) and n not in args.skip]
    if not names:
        print("no benchmark to run", file=sys.stderr)
        return 1
    load = os.getloadavg()
    print(f"benchmarks: {', '.join(names)}; {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} (the machine is shared: figures move with the load)")
    started = time.monotonic()
    outcomes = [run_one(name, quick=args.quick) for name in names]
    total = time.monotonic() - started

    print("\n" + "=" * 100)
    print(f"SUMMARY of {len(outcomes)} benchmarks in {total:.0f} s (load average now {os.getloadavg()[0]:.1f}); "
          "targets from reference/performance-anchors.md")
    for outcome in outcomes:
        print(f"- {outcome.name}: {outcome.status}, {outcome.seconds:.0f} s")
        for line in outcome.key_lines:
            print(f"    {line}")
    return 1 if any(o.status.startswith("ERROR") for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
