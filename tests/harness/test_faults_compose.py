"""Latency composes with one other fault; per-service base latency; SMTP's default fault operation."""

from __future__ import annotations

import concurrent.futures
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage

import httpx
import pytest

from harness.faults import FaultEngine
from harness.scenario import Scenario, ScenarioError
from harness.up import Harness

SENDER = "sender@contoso.example"
SEND_URL = f"/v1.0/users/{SENDER}/sendMail"
MESSAGE = {
    "message": {
        "subject": "Invoice 42",
        "body": {"contentType": "Text", "content": "Hello"},
        "toRecipients": [{"emailAddress": {"address": "to@fabrikam.example"}}],
    }
}


# -- the engine -----------------------------------------------------------------------------------------


def test_a_catch_all_latency_rule_no_longer_hides_later_rules() -> None:
    engine = FaultEngine(
        [
            {"service": "graph", "action": "latency", "latency_s": 0.1},
            {"service": "graph", "action": "latency", "latency_s": 0.15, "operation": "sendMail"},
            {"service": "graph", "catalog": "graph.service_unavailable", "nth": 2, "times": 1},
            {"service": "graph", "action": "drop", "nth": 2, "times": 1},
        ]
    )
    first = engine.match("graph", operation="sendMail")
    second = engine.match("graph", operation="sendMail")
    third = engine.match("graph", operation="listMessages")
    assert first is not None and first.action == "latency" and first.latency_s == pytest.approx(0.15)
    assert second is not None and second.action == "reply" and second.catalog == "graph.service_unavailable"
    assert second.latency_s == pytest.approx(0.15)
    # The drop rule matched the second request too, but only the first non-latency rule acts.
    assert third is not None and third.action == "drop" and third.latency_s == pytest.approx(0.1)
    assert [s["fired"] for s in engine.stats()] == [3, 2, 1, 1]


def test_latency_rules_take_the_longest_and_add_to_the_base() -> None:
    engine = FaultEngine([
        {"service": "graph", "action": "latency", "latency_s": 0.2, "operation": "sendMail"},
        {"service": "graph", "action": "latency", "latency_s": 0.2, "operation": "sendMail"},  # added twice
        {"service": "graph", "action": "latency", "latency_s": 0.05},
    ])
    fault = engine.match("graph", operation="sendMail", base_latency_s=0.1)
    assert fault is not None and fault.latency_s == pytest.approx(0.3)
    assert len(fault.latency_rules) == 3


def test_base_latency_alone_and_with_a_rule() -> None:
    engine = FaultEngine()
    assert engine.match("graph") is None
    slow = engine.match("graph", base_latency_s=0.1)
    assert slow is not None and slow.action == "latency" and slow.rule is None and slow.latency_s == 0.1
    engine.add({"service": "graph", "catalog": "graph.gateway_timeout", "latency_s": 0.2, "times": 1})
    failing = engine.match("graph", base_latency_s=0.1)
    assert failing is not None and failing.action == "reply"
    assert failing.latency_s == pytest.approx(0.3)  # the rule's own wait, then the service's base latency


def test_smtp_rules_without_operation_count_messages_not_commands() -> None:
    engine = FaultEngine([{"service": "smtp", "catalog": "smtp.temporary_error", "nth": 2, "times": 1}])
    session = ("ehlo", "starttls", "ehlo", "auth", "mail", "rcpt", "data", "mail", "rcpt", "data")
    fired = [stage for stage in session if engine.match("smtp", operation=stage) is not None]
    assert fired == ["data"]  # the second message's DATA, not the second command
    assert engine.stats()[0]["matched"] == 2
    # Graph has one request per operation: an operation-less rule still selects every operation.
    graph = FaultEngine([{"service": "graph", "action": "drop"}])
    assert graph.match("graph", operation="createMessage") and graph.match("graph", operation="upload")


def test_scenario_limits_latency() -> None:
    scenario = Scenario.from_toml('extends = "default"\n[limits.graph]\nlatency_ms = 100\n[limits.smtp]\nlatency_ms = 20\n')
    assert scenario.limits.base_latency_s("graph") == pytest.approx(0.1)
    assert scenario.limits.base_latency_s("smtp") == pytest.approx(0.02)
    assert scenario.limits.base_latency_s("keyvault") == 0.0
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    with pytest.raises(ScenarioError, match=r"limits\.graph\.latency_ms"):
        Scenario.default().with_changes({"limits": {"graph": {"latency_ms": -1}}})


# -- on the wire ------------------------------------------------------------------------------------------


@pytest.fixture
def graph(harness: Harness) -> Iterator[httpx.Client]:
    tls = ssl.create_default_context(cafile=str(harness.ca_bundle))
    with httpx.Client(
        base_url=harness.url("graph"),
        verify=tls,
        headers={"Authorization": f"Bearer {harness.mint_token('graph')}"},
        timeout=10,
    ) as client:
        client.post(SEND_URL, json=MESSAGE)  # connection and token check warm
        harness.reset()
        yield client


def _timed(call) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def test_graph_base_latency_delays_success_and_scripted_failures(harness: Harness, graph: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"latency_ms": 250}}})
    harness.set_fault(service="graph", catalog="graph.service_unavailable", retry_after=3, times=1)
    failed, failed_s = _timed(lambda: graph.post(SEND_URL, json=MESSAGE))
    ok, ok_s = _timed(lambda: graph.post(SEND_URL, json=MESSAGE))
    assert (failed.status_code, failed.headers["Retry-After"]) == (503, "3")
    assert ok.status_code == 202
    assert failed_s >= 0.25 and ok_s >= 0.25
    assert len(harness.deliveries()) == 1


def test_catch_all_latency_rule_and_a_reply_rule_both_apply(harness: Harness, graph: httpx.Client) -> None:
    harness.set_fault(service="graph", action="latency", latency_s=0.2)
    harness.set_fault(service="graph", operation="sendMail", catalog="graph.service_unavailable", times=1)
    failed, failed_s = _timed(lambda: graph.post(SEND_URL, json=MESSAGE))
    ok, ok_s = _timed(lambda: graph.post(SEND_URL, json=MESSAGE))
    assert (failed.status_code, ok.status_code) == (503, 202)
    assert failed_s >= 0.2 and ok_s >= 0.2


def test_base_latency_overlaps_and_holds_the_concurrency_slot(harness: Harness, graph: httpx.Client) -> None:
    """The wait is asynchronous: 5 concurrent requests finish in about one latency, and the fifth finds
    four requests in flight (429 MailboxConcurrency), as with a slow real Graph."""
    harness.apply_scenario({"limits": {"graph": {"latency_ms": 400}}})
    barrier = threading.Barrier(5)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return graph.post(SEND_URL, json=MESSAGE)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(send, range(5)))
    elapsed = time.perf_counter() - started
    assert sorted(r.status_code for r in responses) == [202, 202, 202, 202, 429]
    assert 0.4 <= elapsed < 1.6  # serial waits would take 1.6 s or more


def _mail() -> EmailMessage:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = "to@fabrikam.example"
    message["Subject"] = "Invoice 42"
    message.set_content("Hello")
    return message


def _smtp(harness: Harness) -> smtplib.SMTP:
    endpoint = harness.endpoints["smtp"]
    client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=10)
    client.ehlo()
    client.starttls(context=ssl.create_default_context(cafile=str(harness.ca_bundle)))
    client.ehlo()
    token = harness.mint_token("exchange")
    client.auth("XOAUTH2", lambda challenge=None: f"user={SENDER}\x01auth=Bearer {token}\x01\x01")
    return client


def test_smtp_base_latency_per_reply_and_nth_counts_messages(harness: Harness) -> None:
    harness.apply_scenario({"limits": {"smtp": {"latency_ms": 100}}})
    harness.set_fault(service="smtp", catalog="smtp.temporary_error", nth=2, times=1)
    client = _smtp(harness)
    try:
        sent, first_s = _timed(lambda: client.send_message(_mail()))
        assert sent == {}
        assert first_s >= 0.3  # MAIL, RCPT and DATA each wait for the base latency
        with pytest.raises(smtplib.SMTPDataError) as caught:
            client.send_message(_mail())
        assert caught.value.smtp_code == 451
        assert client.send_message(_mail()) == {}
    finally:
        client.quit()
    assert len(harness.deliveries()) == 2
