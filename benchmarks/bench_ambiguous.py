"""Ambiguous sends at volume: does every message go out once, and is every second copy flagged?

    .venv/bin/python -m benchmarks.bench_ambiguous [--messages 500] [--ambiguous 0.2] [--sent-items-delay 1.0]

What runs: the harness and Azurite in this process, the local Functions host on the real ``function_app``,
one mailbox on Graph. A share of sendMail requests (``--ambiguous``, seeded) are processed and then
dropped without an answer (the fake delivers, outbox hears nothing: Graph's 504-after-delivery), and
another share answer 504 without delivering (outbox cannot tell the two apart). Sent Items copies appear
``--sent-items-delay`` seconds after a send, as Graph moves them after transport.

Two runs: outbox's settle time ``OUTBOX_LOOKUP_SETTLE_S`` above the Sent Items delay (the default case:
the lookup after an ambiguous attempt finds a delivered copy, so nothing is sent twice), and a settle
time of 0 (the lookup runs before the copy appears: some messages go twice). Printed per run: messages,
ambiguous attempts, delivered exactly once, delivered twice, lost, resends flagged
``possiblyDuplicated``, and whether every message delivered twice carries the flag (it must).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAILBOX = "sender@contoso.example"


def run(messages: int, ambiguous: float, delay_s: float, settle_s: float, seed: int = 7, *,
        hold_s: float = 0.0, late_s: float = 0.0) -> dict[str, Any]:
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from harness.localhost import LocalHost
    from harness.scenario import Scenario
    from harness.up import Harness
    from shared.storage.status import StatusStore

    # hold_s / late_s: the backend after an ambiguous send (harness docs: exchange.ambiguous_hold_s keeps the
    # concurrency slot, exchange.ambiguous_delivery_delay_s delivers late, the message in Drafts meanwhile).
    scenario = Scenario.default().with_changes({"seed": seed, "exchange": {
        "sent_items_delay_s": delay_s, "ambiguous_hold_s": hold_s, "ambiguous_delivery_delay_s": late_s}})
    with tempfile.TemporaryDirectory() as state, Harness.start(scenario, Path(state), with_azurite=True) as harness:
        harness.set_fault(service="graph", action="drop_after_body", operation="sendMail", probability=ambiguous / 2)
        harness.set_fault(service="graph", catalog="graph.gateway_timeout", operation="sendMail",
                          probability=ambiguous / 2)
        values = harness.settings_values()
        values.update({
            "OUTBOX_QUEUE": f"amb{uuid.uuid4().hex[:8]}", "OUTBOX_STATUS_TABLE": f"amb{uuid.uuid4().hex[:8]}",
            "OUTBOX_LOOKUP_SETTLE_S": str(settle_s), "OUTBOX_BACKOFF_BASE_S": "0.5", "OUTBOX_BACKOFF_MAX_S": "1",
            "OUTBOX_MAX_ATTEMPTS": "8", "OUTBOX_HTTP_TIMEOUT_S": "5", "OUTBOX_LEASE_S": "10",
        })
        queue = QueueServiceClient.from_connection_string(values["AzureWebJobsStorage"]).get_queue_client(
            values["OUTBOX_QUEUE"])
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        ids = [f"amb-{i}" for i in range(messages)]
        for message_id in ids:
            queue.send_message(json.dumps({"id": message_id, "from": MAILBOX, "to": ["a@fabrikam.example"],
                                           "subject": message_id, "text": "ambiguous bench"}))
        status = StatusStore(TableServiceClient.from_connection_string(values["AzureWebJobsStorage"]),
                             values["OUTBOX_STATUS_TABLE"])
        started = time.monotonic()
        host_options = {"max_polling_interval_s": 0.2, "visibility_timeout_s": 1.0}
        with LocalHost(app_root=ROOT, values=values, queue_overrides=host_options, http_port=None) as host:
            def done() -> bool:
                return all((row := status.get(i)) is not None and row.state in ("sent", "poisoned") for i in ids)

            finished = host.wait_until(done, 600, poll_s=1.0)
        elapsed = time.monotonic() - started
        rows = {i: status.get(i) for i in ids}
        per_subject = Counter(d.subject for d in harness.deliveries(mailbox=MAILBOX))
        requests = harness.control.requests().get("graph", {})
    twice = [i for i in ids if per_subject[i] > 1]
    flagged = [i for i, r in rows.items() if r is not None and r.possibly_duplicated]
    ambiguous_attempts = sum(1 for r in rows.values() if r is not None and (r.sent_via == "lookup" or r.possibly_duplicated))
    return {
        "settle_s": settle_s, "messages": messages, "finished": finished, "seconds": round(elapsed, 1),
        "sendMail requests": sum(n for k, n in requests.items() if k.endswith("/sendMail")),
        "found by lookup": sum(1 for r in rows.values() if r is not None and r.sent_via == "lookup"),
        "ambiguous messages": ambiguous_attempts,
        "delivered once": sum(1 for i in ids if per_subject[i] == 1),
        "delivered twice or more": len(twice),
        "lost": sum(1 for i in ids if per_subject[i] == 0),
        "poisoned": sum(1 for r in rows.values() if r is not None and r.state == "poisoned"),
        "flagged possiblyDuplicated": len(flagged),
        "duplicates not flagged": len(set(twice) - set(flagged)),
        "every duplicate flagged": set(twice) <= set(flagged),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--ambiguous", type=float, default=0.2, help="share of sendMail requests left unanswered")
    parser.add_argument("--sent-items-delay", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=0.0,
                        help="after an ambiguous send the backend holds the mailbox's concurrency slot this long (s)")
    parser.add_argument("--late-delivery", type=float, default=0.0,
                        help="after an ambiguous send that delivers, delivery comes this late (s; in Drafts meanwhile)")
    parser.add_argument("--settled-only", action="store_true", help="skip the run with OUTBOX_LOOKUP_SETTLE_S=0")
    args = parser.parse_args(argv)
    ok = True
    late = args.sent_items_delay + args.late_delivery
    for settle in ((late + 1.0,) if args.settled_only else (late + 1.0, 0.0)):
        result = run(args.messages, args.ambiguous, args.sent_items_delay, settle, hold_s=args.hold,
                     late_s=args.late_delivery)
        print(f"OUTBOX_LOOKUP_SETTLE_S={settle:g} (Sent Items after {args.sent_items_delay:g} s; backend holds the "
              f"slot {args.hold:g} s, delivers {args.late_delivery:g} s late):")
        for key, value in result.items():
            if key != "settle_s":
                print(f"  {key:<28} {value}")
        ok = ok and result["finished"] and result["lost"] == 0 and result["every duplicate flagged"]
        if settle > late:
            ok = ok and result["delivered twice or more"] == 0
    print("as expected" if ok else "NOT as expected")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
