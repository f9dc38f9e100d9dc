"""checkov scans the Bicep offline: zero failed checks, zero parse errors, and every skip explained in place.

checkov pins an old pycep-parser, so it lives in its own virtual environment; `make test` (and so CI)
passes its path as OUTBOX_CHECKOV. checkov exits 0 even when it could not parse a file, so the parse
errors are counted here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from typing import Any

import pytest

from tests.infra import bicep

CHECKOV = os.environ.get("OUTBOX_CHECKOV", "")

pytestmark = pytest.mark.skipif(
    not CHECKOV,
    reason="OUTBOX_CHECKOV is not set: `make test` creates .venv-checkov and sets it (CI does the same)",
)

SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(CKV\w*_\d+):(.*)$", re.M)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    proc = subprocess.run(
        [CHECKOV, "-d", "infra", "--framework", "bicep", "--skip-download", "--output", "json", "--compact"],
        cwd=bicep.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # No network: --skip-download keeps checkov from fetching policies; no API key means no platform calls.
        env={k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_"))},
    )
    assert proc.stdout.strip(), f"checkov printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    data = json.loads(proc.stdout)
    if isinstance(data, list):
        (data,) = [d for d in data if d.get("check_type") == "bicep"]
    return data


def test_checkov_parsed_every_template(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0, f"checkov could not parse: {report['results'].get('parsing_errors')}"
    assert summary["resource_count"] > 0


def test_checkov_has_no_failed_check(report: dict[str, Any]) -> None:
    failed = report["results"].get("failed_checks", [])
    assert [(c["check_id"], c["resource"], c["file_path"]) for c in failed] == []
    assert report["summary"]["passed"] > 0


def test_every_skip_is_written_next_to_its_resource_with_a_reason(report: dict[str, Any]) -> None:
    comments: Counter[tuple[str, str]] = Counter()
    for path in bicep.bicep_files():
        for check_id, reason in SKIP_COMMENT.findall(path.read_text()):
            assert len(reason.strip()) > 30, f"{path.name}: skip of {check_id} needs a real reason"
            comments[(path.name, check_id)] += 1
    applied = Counter((c["file_path"].rsplit("/", 1)[-1], c["check_id"]) for c in report["results"].get("skipped_checks", []))
    assert report["summary"]["skipped"] == sum(applied.values())
    for check in report["results"].get("skipped_checks", []):
        assert (check["check_result"].get("suppress_comment") or "").strip(), f"{check['check_id']} skipped without a reason"
    # Each applied skip comes from its own comment, and no comment is stale (skipping a check that never ran).
    assert applied == comments, f"applied: {dict(applied)}; commented: {dict(comments)}"
