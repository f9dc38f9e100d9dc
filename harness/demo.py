"""``python -m harness demo`` (``make demo``): the whole offline stack, end to end, in well under a minute.

Starts the harness (fake Entra ID, managed identity, Key Vault, Graph, Exchange SMTP) and Azurite, runs
the real ``function_app`` in the local Functions host, puts messages on the queue through both
transports (app-only, and as a user signed in once by device code: delegated) together with the failures a
team meets first, waits for every outcome and prints what was
sent, retried and poisoned, with the fix for each poison. Exits 0 when every outcome is the expected one.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SENDER = "sender@contoso.example"
NOREPLY = "noreply@contoso.example"
OUTSIDE = "other@contoso.example"
DELEGATE = "delegate@contoso.example"  # a person who signs in once; outbox then sends as them (delegated)
DELEGATED_CLIENT_ID = "0b0c0000-0000-4000-8000-0000000de1e9"  # apps.outbox-delegated in the default scenario

# Demo time: the same settings as production, with delays in seconds instead of minutes.
DEMO_SETTINGS = {
    "OUTBOX_BACKOFF_BASE_S": "1",
    "OUTBOX_BACKOFF_MAX_S": "4",
    "OUTBOX_RETRY_AFTER_MAX_S": "30",
    "OUTBOX_LEASE_S": "20",
    "OUTBOX_DELEGATED_CLIENT_ID": DELEGATED_CLIENT_ID,
    "OUTBOX_DELEGATED_MAILBOXES": DELEGATE,
}
DEMO_HOST = {"max_polling_interval_s": 0.25, "visibility_timeout_s": 2.0}


@dataclass
class Case:
    id: str
    title: str
    body: dict[str, Any] | str
    expect_state: str
    expect_category: str | None = None
    base64: bool = False
    expect_retry: bool = False
    queue_id: str | None = None  # for a body without its own id

    @property
    def key(self) -> str:
        return self.queue_id or self.id


def _mail(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": SENDER, "to": ["alice@fabrikam.example"], "subject": "outbox demo",
                            "text": "Sent by the outbox demo."}
    body.update(fields)
    return body


def cases() -> list[Case]:
    note = base64.b64encode(b"demo attachment\n").decode()
    return [
        Case("demo-graph", "Graph sendMail, plain JSON body", _mail(id="demo-graph", cc=["bob@fabrikam.example"],
             attachments=[{"name": "note.txt", "contentBase64": note}]), "sent"),
        Case("demo-smtp", "SMTP XOAUTH2, base64 body", _mail(id="demo-smtp", transport="smtp",
             bcc=["audit@fabrikam.example"], html="<p>Sent by the <b>outbox</b> demo.</p>"), "sent", base64=True),
        Case("demo-delegated-graph", "delegated: Graph /me/sendMail as the signed-in user",
             _mail(id="demo-delegated-graph", **{"from": DELEGATE}), "sent"),
        Case("demo-delegated-smtp", "delegated: SMTP XOAUTH2 user=<the signed-in user>",
             _mail(id="demo-delegated-smtp", transport="smtp", **{"from": DELEGATE}), "sent"),
        Case("demo-throttled", "Graph 429 with Retry-After, then delivered",
             _mail(id="demo-throttled", **{"from": NOREPLY}), "sent", "throttled", expect_retry=True),
        Case("demo-535", "SMTP 535 5.7.3: no mailbox permission for noreply@",
             _mail(id="demo-535", transport="smtp", **{"from": NOREPLY}), "poisoned", "auth"),
        Case("demo-policy", "Graph 403: mailbox outside the access policy",
             _mail(id="demo-policy", **{"from": OUTSIDE}), "poisoned", "permission"),
        Case("demo-invalid", "invalid message (no recipient)", _mail(id="demo-invalid", to=[]), "poisoned",
             "invalid_message"),
        Case("demo-not-json", "a body that is not JSON", "Hello! This is plain text, not JSON.", "poisoned",
             "invalid_message"),
    ]


def _setup_failures(harness: Any) -> None:
    # 535 5.7.3: the email team granted FullAccess/Send As for sender@ only.
    harness.apply_scenario({"apps": {"outbox-sender": {"smtp": {"full_access": [SENDER], "send_as": [SENDER]}}}})
    # Throttling that recovers: one 429 with Retry-After: 2 for noreply@ on Graph.
    harness.set_fault(service="graph", catalog="graph.too_many_requests", retry_after=2, times=1, mailbox=NOREPLY,
                      operation="sendMail")


def _sign_in(harness: Any, values: dict[str, str], out: TextIO) -> None:
    """What `outbox login --mailbox delegate@ --device-code` does, with the user's approval given over the
    harness's control API (the person entering the code on their phone)."""
    import threading

    from harness.up import identity_environment
    from shared.http import build_client
    from shared.settings import load_settings
    from shared.signins.key import SigninKey
    from shared.signins.login import sign_in
    from shared.storage import build_stores

    def approve(flow: Any) -> None:
        threading.Thread(target=harness.control.approve_device_code, args=(flow["user_code"], DELEGATE),
                         daemon=True).start()

    settings = load_settings(values)
    with identity_environment(values), build_stores(settings) as stores, build_client(settings) as http:
        key = SigninKey(settings)
        try:
            sign_in(settings, stores.signins, key, http, mailbox=DELEGATE, account=DELEGATE, method="device-code",
                    transports=["graph", "smtp"], show_device_code=approve, timeout_s=30)
        finally:
            key.close()
    out.write(f"  {DELEGATE} signed in (device code, delegated Mail.Send + SMTP.Send); stored sealed\n")


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def run(out: TextIO, *, timeout_s: float, state_dir: Path, verbose: bool) -> int:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient

    from harness.localhost import LocalHost
    from harness.scenario import Scenario
    from harness.up import Harness
    from shared.storage.status import StatusStore

    started = time.monotonic()
    out.write("outbox demo: fake Entra ID + Key Vault + Graph + Exchange SMTP, Azurite, local Functions host\n")
    with Harness.start(Scenario.default(), state_dir, with_azurite=True) as harness:
        _setup_failures(harness)
        harness.control.apply_scenario(patch={"delegated": {"device_code_interval_s": 1}})
        values = harness.settings_values()
        values.update(DEMO_SETTINGS)
        out.write(f"  harness up in {time.monotonic() - started:.1f} s; state in {state_dir}\n")
        _sign_in(harness, values, out)
        queue_service = QueueServiceClient.from_connection_string(values["AzureWebJobsStorage"])
        queue = queue_service.get_queue_client(values["OUTBOX_QUEUE"])
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        with LocalHost(app_root=PROJECT_ROOT, values=values, queue_overrides=DEMO_HOST, http_port=None) as host:
            out.write(f"  local Functions host: {', '.join(f.name for f in host.functions)}\n")
            demo = cases()
            for case in demo:
                text = case.body if isinstance(case.body, str) else json.dumps(case.body)
                if case.base64:
                    text = base64.b64encode(text.encode()).decode()
                sent = queue.send_message(text)
                if isinstance(case.body, str):
                    case.queue_id = sent.id
            out.write(f"  enqueued {len(demo)} messages; waiting for their outcomes...\n\n")
            from azure.data.tables import TableServiceClient

            status = StatusStore(TableServiceClient.from_connection_string(values["AzureWebJobsStorage"]),
                                 values.get("OUTBOX_STATUS_TABLE") or "outboxstatus")
            final = {"sent", "poisoned"}

            def done() -> bool:
                return all((row := status.get(c.key)) is not None and row.state in final for c in demo)

            finished = host.wait_until(done, timeout_s, poll_s=0.2)
            rows = {c.key: status.get(c.key) for c in demo}
            deliveries = harness.deliveries()
    return _report(out, demo, rows, deliveries, finished, time.monotonic() - started, verbose)


def _report(out: TextIO, demo: list[Case], rows: dict[str, Any], deliveries: list[Any], finished: bool,
            elapsed: float, verbose: bool) -> int:
    table = [["message", "transport", "mailbox", "sent as", "outcome", "attempts", "category", "as expected"]]
    who = {d.message_id: (f"user {d.user}" if d.auth_type == "delegated" else "app") for d in deliveries}
    fixes: list[tuple[str, str]] = []
    failures = 0
    for case in demo:
        row = rows.get(case.key)
        state = row.state if row else "missing"
        category = row.last_category if row else None
        # A throttled try spends no attempt: the row counts it apart.
        retried = bool(row and (row.attempts > 1 or row.throttled > 0))
        ok = state == case.expect_state and (case.expect_category is None or category == case.expect_category)
        ok = ok and (retried == case.expect_retry)
        failures += 0 if ok else 1
        name = case.id if not case.queue_id else f"(queue id {case.queue_id[:8]}…)"
        outcome = state
        if state == "sent" and retried and row is not None:
            outcome = (f"sent after {row.throttled} throttled tr{'y' if row.throttled == 1 else 'ies'} "
                       f"({row.last_code}, no attempt spent)" if row.throttled
                       else f"sent after retry ({category} {row.last_code})")
        if state == "poisoned" and row is not None:
            what = f"{row.last_detail} -> " if category == "invalid_message" and row.last_detail else ""
            fixes.append((name, f"[{category} {row.last_code}] {what}{row.last_hint or ''}"))
        table.append([
            name,
            (row.transport if row else "") or "-",
            (row.mailbox if row else "") or "-",
            who.get(row.internet_message_id, "-") if row else "-",
            outcome,
            str(row.attempts if row else 0),
            (category or "-") if state != "sent" else "-",
            "yes" if ok else f"NO (wanted {case.expect_state} {case.expect_category or ''})".rstrip(),
        ])
    _table(table, out)
    if fixes:
        out.write("\nwhat to fix (the hint each poison envelope carries):\n")
        for name, hint in fixes:
            lines = textwrap.wrap(hint, 100) or [""]
            out.write(f"  {name}: {lines[0]}\n")
            for line in lines[1:]:
                out.write(f"  {' ' * len(name)}  {line}\n")
    sent = sum(1 for r in rows.values() if r and r.state == "sent")
    retried_count = sum(1 for r in rows.values() if r and r.state == "sent" and r.attempts > 1)
    poisoned = sum(1 for r in rows.values() if r and r.state == "poisoned")
    out.write(f"\nsent {sent} ({retried_count} after a retry), poisoned {poisoned} (each with a classified envelope on "
              f"the poison queue); {len(deliveries)} messages reached the fake mailboxes.\n")
    if verbose:
        for case in demo:
            out.write(f"  {case.id}: {case.title}\n")
    if not finished:
        out.write("some messages did not reach a final state in time\n")
    verdict = "every outcome as expected" if failures == 0 and finished else f"{failures} unexpected outcome(s)"
    out.write(f"{verdict}; {elapsed:.1f} s\n")
    return 0 if failures == 0 and finished else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness demo", description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for every outcome")
    parser.add_argument("--state", default=None, help="state folder (default: a temporary one, removed after)")
    parser.add_argument("--verbose", action="store_true", help="show the function's log events too")
    args = parser.parse_args(list(argv) if argv is not None else None)

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    temp = args.state is None
    state_dir = Path(tempfile.mkdtemp(prefix="outbox-demo-")) if temp else Path(args.state)
    from harness.azurite import AzuriteError

    try:
        return run(sys.stdout, timeout_s=args.timeout, state_dir=state_dir, verbose=args.verbose)
    except AzuriteError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if temp:
            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
