"""Fault rules: selection (Nth, times, filters, seeded probability) and what the client sees on the wire."""

from __future__ import annotations

import ssl
import time

import httpx
import pytest
from aiohttp import web

from harness.faults import FaultEngine, FaultRule, FaultRuleError, aiohttp_middleware
from harness.pki import TestPKI
from harness.server import ServiceHost
from harness.state import HarnessState
from harness.up import Harness
from shared import catalog


def _fired(engine: FaultEngine, n: int, **request) -> list[bool]:
    return [engine.match(request.pop("service", "graph"), **request) is not None for _ in range(n)]


def test_nth_and_times() -> None:
    engine = FaultEngine([{"service": "graph", "catalog": "graph.service_unavailable", "nth": 3, "times": 2}])
    assert _fired(engine, 6) == [False, False, True, True, False, False]


def test_filters_select_requests() -> None:
    engine = FaultEngine(
        [{"service": "smtp", "action": "drop", "mailbox": "Sender@contoso.example", "recipient": "b@x.example", "operation": "data"}]
    )
    assert engine.match("smtp", mailbox="sender@contoso.example", recipients=["a@x.example", "B@x.example"], operation="DATA")
    assert not engine.match("smtp", mailbox="sender@contoso.example", recipients=["a@x.example"], operation="data")
    assert not engine.match("smtp", mailbox="other@contoso.example", recipients=["b@x.example"], operation="data")
    assert not engine.match("graph", mailbox="sender@contoso.example", recipients=["b@x.example"], operation="data")
    assert not engine.match("smtp", mailbox="sender@contoso.example", recipients=["b@x.example"], operation="rcpt")


def test_seeded_probability_replays_exactly() -> None:
    rules = [{"service": "graph", "catalog": "graph.service_unavailable", "probability": 0.3}]
    first = _fired(FaultEngine(rules, seed=7), 200)
    assert _fired(FaultEngine(rules, seed=7), 200) == first
    assert _fired(FaultEngine(rules, seed=8), 200) != first
    assert 30 < sum(first) < 90
    engine = FaultEngine(rules, seed=7)
    _fired(engine, 50)
    engine.reseed()
    assert _fired(engine, 200) == first


def test_each_rule_has_its_own_random_stream() -> None:
    alone = _fired(FaultEngine([{"service": "graph", "action": "drop", "probability": 0.5, "id": "a"}], seed=1), 100)
    engine = FaultEngine(
        [{"service": "smtp", "action": "drop", "probability": 0.5, "id": "b"},
         {"service": "graph", "action": "drop", "probability": 0.5, "id": "a"}],
        seed=1,
    )
    mixed = []
    for _ in range(100):
        engine.match("smtp")
        mixed.append(engine.match("graph") is not None)
    assert mixed == alone


@pytest.mark.parametrize(
    "rule",
    [
        {"service": "ftp"},
        {"service": "graph", "action": "explode"},
        {"service": "graph", "action": "reply"},
        {"service": "graph", "action": "drop", "nth": 0},
        {"service": "graph", "action": "drop", "probability": 2},
        {"service": "graph", "action": "drop", "colour": "red"},
    ],
)
def test_bad_rules_are_refused(rule) -> None:
    with pytest.raises(FaultRuleError):
        FaultRule.from_dict(rule)


# -- on the wire --------------------------------------------------------------------------------------------


def _client(h: Harness) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(h.ca_bundle)), timeout=10)


def _discovery(h: Harness) -> str:
    return f"{h.url('entra')}/{h.scenario.tenant_id}/v2.0/.well-known/openid-configuration"


def test_reply_answers_the_catalog_entry(harness: Harness) -> None:
    harness.set_fault(service="entra", catalog="entra.temporarily_unavailable", retry_after=7, times=1)
    with _client(harness) as client:
        failed = client.get(_discovery(harness))
        ok = client.get(_discovery(harness))
    row = catalog.entry("entra.temporarily_unavailable")
    assert failed.status_code == row.status
    assert failed.json()["error"] == row.oauth_error and failed.json()["error_codes"] == [90033]
    assert failed.headers["Retry-After"] == "7"
    assert ok.status_code == 200


def test_latency_delays_then_serves(harness: Harness) -> None:
    with _client(harness) as client:
        client.get(_discovery(harness))
        start = time.perf_counter()
        client.get(_discovery(harness))
        plain = time.perf_counter() - start
        harness.set_fault(service="entra", action="latency", latency_s=0.3, times=1)
        start = time.perf_counter()
        slow = client.get(_discovery(harness))
        delayed = time.perf_counter() - start
    assert slow.status_code == 200
    assert delayed >= 0.3 > plain


def test_drop_closes_without_an_answer(harness: Harness) -> None:
    harness.set_fault(service="keyvault", action="drop", times=1)
    with _client(harness) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{harness.keyvault_url}/secrets/x?api-version=7.5")
        assert client.get(f"{harness.keyvault_url}/secrets/x?api-version=7.5").status_code == 401
    assert harness.state.count("keyvault", "status:dropped") == 1


@pytest.mark.parametrize("mode", ["refused", "reset"])
def test_down_service_and_back_on_the_same_port(harness: Harness, mode: str) -> None:
    url = f"{harness.keyvault_url}/secrets/x?api-version=7.5"
    port = harness.endpoints["keyvault"].port
    rule = harness.set_fault(service="keyvault", action="down", down_mode=mode)
    with _client(harness) as client:
        with pytest.raises(httpx.ConnectError, match="refused" if mode == "refused" else "reset|EOF"):
            client.get(url)
        harness.runtime.faults.remove(rule.id)
        assert client.get(url).status_code == 401
    assert harness.endpoints["keyvault"].port == port


def test_down_through_the_control_api_and_reset(harness: Harness) -> None:
    harness.control.add_fault(service="entra", action="down")
    with _client(harness) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(_discovery(harness))
        harness.control.reset()
        assert client.get(_discovery(harness)).status_code == 200


def test_drop_after_body_runs_the_handler_first(tmp_path) -> None:
    pki = TestPKI.in_directory(tmp_path)
    engine = FaultEngine(seed=1)
    handled: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        handled.append(await request.text())
        return web.Response(text="done")

    app = web.Application(middlewares=[aiohttp_middleware(engine, "graph")])
    app.router.add_post("/send", handler)
    with ServiceHost(ssl_context=pki.server_ssl_context(), state=HarnessState()) as host:
        url = host.add_app("graph", app).url + "/send"
        engine.add({"service": "graph", "action": "drop_after_body", "times": 1})
        engine.add({"service": "graph", "action": "drop", "nth": 2, "times": 1})
        with httpx.Client(verify=pki.client_ssl_context()) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                client.post(url, content=b"first")
            with pytest.raises(httpx.RemoteProtocolError):
                client.post(url, content=b"second")
            assert client.post(url, content=b"third").text == "done"
    assert handled == ["first", "third"]  # processed-then-dropped vs dropped-unprocessed
