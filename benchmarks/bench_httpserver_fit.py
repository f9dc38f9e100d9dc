"""Is pytest-httpserver (named in the design card) fit to be the harness's Graph fake? Measured, not assumed.

    .venv/bin/python -m benchmarks.bench_httpserver_fit [--count N]

Same client for both servers: httpx (sync), TLS with the test CA, one client reused (keep-alive if the
server allows it), a sendMail-shaped POST answered 202.
1. throughput, pytest-httpserver (werkzeug) with ``threaded=False`` (its default) and ``threaded=True``,
   against the harness's aiohttp Graph fake;
2. five concurrent requests that each take 0.3 s on the server (Graph's MailboxConcurrency case): how long
   the five take, and whether the server can answer the fifth with 429 while four are in flight.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable

import httpx
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from harness.pki import TestPKI
from harness.scenario import Scenario
from harness.up import Harness

SENDER = "sender@contoso.example"
PATH = f"/v1.0/users/{SENDER}/sendMail"
BODY = {"message": {"subject": "fit", "toRecipients": [{"emailAddress": {"address": "to@fabrikam.example"}}]}}
SLOW_S = 0.3


def throughput(url: str, context: ssl.SSLContext, count: int, headers: dict[str, str]) -> tuple[float, set[str]]:
    connection_headers: set[str] = set()
    with httpx.Client(verify=context, headers=headers) as client:
        client.post(url, json=BODY)
        started = time.perf_counter()
        for _ in range(count):
            response = client.post(url, json=BODY)
            assert response.status_code == 202, response.text
            connection_headers.add(response.headers.get("connection", "keep-alive"))
        return count / (time.perf_counter() - started), connection_headers


def five_concurrent(url: str, context: ssl.SSLContext, headers: dict[str, str]) -> tuple[float, list[int]]:
    barrier = threading.Barrier(5)

    def one(_: int) -> int:
        with httpx.Client(verify=context, headers=headers, timeout=30) as client:
            barrier.wait()
            return client.post(url, json=BODY).status_code

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        statuses = sorted(pool.map(one, range(5)))
    return time.perf_counter() - started, statuses


def httpserver_figures(pki: TestPKI, ca: ssl.SSLContext, count: int, threaded: bool) -> None:
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=pki.server_ssl_context(), threaded=threaded)
    server.start()
    try:
        server.expect_request(PATH, method="POST").respond_with_data("", status=202)
        per_s, connection = throughput(server.url_for(PATH), ca, count, {})
        server.clear()

        in_flight = 0
        lock = threading.Lock()

        def slow(_: Request) -> Response:
            # What a fake would have to hand-write: a per-mailbox in-flight counter answering 429.
            nonlocal in_flight
            with lock:
                if in_flight >= 4:
                    return Response("", status=429, headers={"Retry-After": "1"})
                in_flight += 1
            try:
                time.sleep(SLOW_S)
                return Response("", status=202)
            finally:
                with lock:
                    in_flight -= 1

        server.expect_request(PATH, method="POST").respond_with_handler(slow)
        wall, statuses = five_concurrent(server.url_for(PATH), ca, {})
    finally:
        server.stop()
    label = f"pytest-httpserver threaded={threaded}"
    print(f"{label:<38} {per_s:>7,.0f} sendMail/s  (Connection: {', '.join(sorted(connection))})")
    print(f"{'':<38} 5 concurrent x {SLOW_S} s: {wall:.2f} s, statuses {statuses}")


def aiohttp_fake_figures(ca_path: str, count: int) -> None:
    scenario = Scenario.default().with_changes({"limits": {"graph": {"requests_per_window": 10**9}}})
    with tempfile.TemporaryDirectory() as state, Harness.start(scenario, state) as harness:
        context = ssl.create_default_context(cafile=str(harness.ca_bundle))
        headers = {"Authorization": f"Bearer {harness.mint_token('graph')}"}
        url = harness.url("graph") + PATH
        per_s, connection = throughput(url, context, count, headers)
        harness.set_fault(service="graph", action="latency", latency_s=SLOW_S, operation="sendMail")
        wall, statuses = five_concurrent(url, context, headers)
    print(f"{'harness Graph fake (aiohttp)':<38} {per_s:>7,.0f} sendMail/s  (Connection: {', '.join(sorted(connection))})")
    print(f"{'':<38} 5 concurrent x {SLOW_S} s: {wall:.2f} s, statuses {statuses}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="requests per throughput run")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its per-request log line is not the server's work
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as directory:
        pki = TestPKI()
        paths = pki.write(directory)
        ca = ssl.create_default_context(cafile=str(paths["ca"]))
        runs: list[Callable[[], None]] = [
            lambda: httpserver_figures(pki, ca, args.count, threaded=False),
            lambda: httpserver_figures(pki, ca, args.count, threaded=True),
            lambda: aiohttp_fake_figures(str(paths["ca"]), args.count),
        ]
        for run in runs:
            run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
