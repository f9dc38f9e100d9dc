"""What the inbox page costs with many deliveries: the paged control API it reads, against the unpaged one.

    .venv/bin/python -m benchmarks.bench_inbox [--deliveries N] [--rounds R] [--quick]

A harness in process (no Azurite) holds N deliveries (SMTP MIME of ~1.5 KB with an attachment, every
third a Graph JSON send), recorded straight into its observations. One keep-alive httpx client over TLS
reads, as the page does:
- the first page of 50, cold (summaries parsed for the first time) and warm;
- a page deep in the list (offset N - 50);
- a text search over all N (the filter reads only what the fake recorded: no MIME parsing);
- one message's view, cold;
and, for the ratio, ``GET /deliveries`` (every delivery with its MIME in base64, what a page without
paging would have to fetch). Medians of ``--rounds``; the target is the page's budget for a refresh.
"""

from __future__ import annotations

import argparse
import base64
import os
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage

import httpx

from harness.state import Delivery
from harness.up import Harness

PAGE_TARGET_MS = 100.0  # a live refresh must feel instant
SENDER = "sender@contoso.example"


def mime(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "ana@fabrikam.example"
    message["Subject"] = f"bulk message {n:05d}"
    message.set_content(f"body {n}\n" * 20)
    message.add_attachment(os.urandom(512), maintype="application", subtype="octet-stream", filename=f"f{n}.bin")
    return message.as_bytes()


def fill(harness: Harness, count: int) -> None:
    app_id = harness.scenario.sender.client_id
    now = time.time()
    for n in range(count):
        subject = f"bulk message {n:05d}"
        if n % 3 == 2:
            body = {"message": {"subject": subject, "body": {"contentType": "Text", "content": f"body {n}"},
                                "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}],
                                "attachments": [{"name": f"f{n}.bin", "contentBytes": base64.b64encode(os.urandom(512)).decode()}]}}
            delivery = Delivery(transport="graph", mailbox=SENDER, app_id=app_id, recipients=("ana@fabrikam.example",),
                                subject=subject, sender=SENDER, graph_json=body, time=now + n / 1000)
        else:
            delivery = Delivery(transport="smtp", mailbox=SENDER, app_id=app_id, recipients=("ana@fabrikam.example",),
                                subject=subject, sender=SENDER, raw_mime=mime(n), time=now + n / 1000)
        harness.state.add_delivery(delivery)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 deliveries, 2 rounds")
    args = parser.parse_args()
    count, rounds = (1_000, 2) if args.quick else (args.deliveries, args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f}; {count} deliveries, {rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory() as state, Harness.start(None, state) as harness:
        fill(harness, count)
        base = harness.url("control")
        verify = ssl.create_default_context(cafile=str(harness.ca_bundle))
        with httpx.Client(verify=verify, timeout=120) as client:
            def get(path: str, **params: object) -> httpx.Response:
                response = client.get(f"{base}{path}", params=params)
                response.raise_for_status()
                return response

            cold = timed(lambda: get("/deliveries/page", limit=50))
            warm = statistics.median(timed(lambda: get("/deliveries/page", limit=50)) for _ in range(rounds))
            deep = statistics.median(timed(lambda: get("/deliveries/page", limit=50, offset=count - 50))
                                     for _ in range(rounds))
            search = statistics.median(timed(lambda: get("/deliveries/page", q="message 0123"))
                                       for _ in range(rounds))
            oldest = harness.state.deliveries()[0].id
            view = timed(lambda: get(f"/deliveries/{oldest}"))
            page_bytes = len(get("/deliveries/page", limit=50).content)
            full = statistics.median(timed(lambda: get("/deliveries")) for _ in range(max(1, rounds // 2)))
            full_bytes = len(get("/deliveries").content)
    print(f"first page of 50, cold: {cold:.1f} ms; warm: {warm:.1f} ms ({page_bytes / 1024:.0f} KB)")
    print(f"page at offset {count - 50}: {deep:.1f} ms")
    print(f"text search over {count}: {search:.1f} ms")
    print(f"one message's view, cold: {view:.1f} ms")
    print(f"unpaged GET /deliveries: {full:.0f} ms ({full_bytes / 1024 / 1024:.1f} MB): "
          f"{full / warm:.0f}x the warm page, {full_bytes / page_bytes:.0f}x its bytes")
    worst = max(warm, search)
    verdict = "within" if worst <= PAGE_TARGET_MS else "OVER"
    print(f"SUMMARY inbox: page {warm:.1f} ms, search {search:.1f} ms over {count} deliveries "
          f"({verdict} the {PAGE_TARGET_MS:.0f} ms target); unpaged {full / warm:.0f}x slower")
    return 0 if worst <= PAGE_TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
