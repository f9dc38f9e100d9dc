"""The README's main command: `make demo` runs `python -m harness demo` and must pass on a fresh machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_case_as_expected_well_under_a_minute() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness", "demo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "every outcome as expected" in out
    for case in ("demo-graph", "demo-smtp", "demo-throttled", "demo-535", "demo-policy", "demo-invalid"):
        assert case in out
    assert out.count("user delegate@contoso.example") == 2  # one delegated send through each transport
    assert "sent after 1 throttled try" in out and "no attempt spent" in out and "Add-MailboxPermission" in out
    seconds = float(out.strip().rsplit(";", 1)[1].split()[0])
    assert seconds < 60
