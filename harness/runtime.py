"""Everything one running harness shares: the object every fake's ``register(runtime)`` receives."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.credentials import CertificateStore
from harness.faults import Fault, FaultEngine
from harness.pki import TestPKI
from harness.scenario import Scenario
from harness.server import Endpoint, ServiceHost
from harness.signins import SignInStore
from harness.state import HarnessState
from harness.tokens import EXCHANGE, GRAPH, KEYVAULT, OUTLOOK_AUDIENCE, Claims, TokenIssuer

ResourceName = Literal["graph", "exchange", "keyvault"]

# The host name the fakes claim to be in replies that name a server (SMTP banner, 535's "[host]").
FAKE_EXCHANGE_HOST = "HARNESS01.contoso.prod.outlook.com"


@dataclass
class HarnessRuntime:
    host: ServiceHost
    pki: TestPKI
    tokens: TokenIssuer
    state: HarnessState
    faults: FaultEngine
    _scenario: Scenario
    credentials: CertificateStore
    state_dir: Path | None = None
    keyvault_resource: str = KEYVAULT.uri
    """The resource the fake vault names in its challenge (a dotted suffix of its address, see keyvault.py)."""
    sign_ins: SignInStore = field(default_factory=SignInStore)
    """Delegated sign-ins the fake Entra remembers (device codes, authorization codes, refresh tokens)."""
    _listeners: list[Callable[[Scenario], None]] = field(default_factory=list)
    _reset_hooks: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- scenario -------------------------------------------------------------------------------------
    @property
    def scenario(self) -> Scenario:
        """The current scenario: read it per request (POST /scenario swaps it while running)."""
        with self._lock:
            return self._scenario

    def set_scenario(self, scenario: Scenario) -> None:
        self.credentials.apply(scenario)
        with self._lock:
            previous, self._scenario = self._scenario, scenario
        if scenario.faults != previous.faults or scenario.seed != previous.seed:
            self.faults.replace_all(scenario.faults, seed=scenario.seed)
        for callback in list(self._listeners):
            callback(scenario)

    def on_scenario_change(self, callback: Callable[[Scenario], None]) -> None:
        """Called (on the caller's thread) after a scenario swap, e.g. to rebuild limiters."""
        self._listeners.append(callback)

    # -- reset ----------------------------------------------------------------------------------------
    def on_reset(self, callback: Callable[[], None]) -> None:
        """Called on ``POST /reset`` (between tests): clear limiter windows, sessions, caches."""
        self._reset_hooks.append(callback)

    def reset(self, scenario: Scenario | None = None) -> None:
        """Forget deliveries, requests and limiter state; faults back to the scenario's own rules."""
        self.credentials.undo_rotations()
        if scenario is not None and scenario != self.scenario:
            self.set_scenario(scenario)
        current = self.scenario
        self.state.reset()
        self.sign_ins.clear()
        self.faults.replace_all(current.faults, seed=current.seed)
        for callback in list(self._reset_hooks):
            callback()

    # -- tokens ---------------------------------------------------------------------------------------
    def audiences(self, resource: ResourceName) -> tuple[str, ...]:
        if resource == "graph":
            return GRAPH.audiences
        if resource == "exchange":
            return (*EXCHANGE.audiences, OUTLOOK_AUDIENCE, OUTLOOK_AUDIENCE + "/")
        return (self.keyvault_resource, self.keyvault_resource + "/")

    def verify(self, token: str, resource: ResourceName, *, leeway_s: float = 0) -> Claims:
        """Validate a bearer token for a resource in the scenario's tenant (raises ``TokenRejected``)."""
        return self.tokens.verify_access_token(
            token, audiences=self.audiences(resource), tenant_id=self.scenario.tenant_id, leeway_s=leeway_s
        )

    # -- faults ---------------------------------------------------------------------------------------
    def fault(
        self,
        service: str,
        *,
        mailbox: str | None = None,
        recipients: Iterable[str] = (),
        operation: str | None = None,
    ) -> Fault | None:
        return self.faults.match(
            service,
            mailbox=mailbox,
            recipients=recipients,
            operation=operation,
            base_latency_s=self.scenario.limits.base_latency_s(service),
        )

    # -- endpoints ------------------------------------------------------------------------------------
    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return self.host.endpoints

    def sync_down_services(self) -> None:
        """Open/close listeners to match the 'down' fault rules (safe from any thread)."""
        if self.host.on_loop_thread():
            self.host.loop.create_task(self.sync_down_services_async())
        else:
            self.host.run(self.sync_down_services_async())

    async def sync_down_services_async(self) -> None:
        wanted = self.faults.down_services()
        current = self.host.down_services()
        for name in self.host.endpoints:
            if current.get(name) != wanted.get(name):
                await self.host.set_down_async(name, wanted.get(name))
