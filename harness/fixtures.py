"""pytest plugin: the offline harness and Azurite as fixtures.

Enable it with ``pytest_plugins = ["harness.fixtures"]`` in a conftest.py (app teams can do the same).

Fixtures:
- ``azurite`` (session): a running ``harness.azurite.Azurite`` (in memory); ``azurite.connection_string``.
- ``harness`` (function view of one session-wide harness: default scenario, every fake, TLS): before
  each test its deliveries, request counters, faults, limiter state and scenario are reset.
- ``harness_factory`` (function): ``harness_factory(scenario=None, **start_kwargs) -> Harness`` starts a
  harness of its own (a ``Scenario``, a TOML path, or TOML text); stopped when the test ends.
- ``harness_env`` (function): puts the harness's settings (OUTBOX_*, IDENTITY_*, AZURE_CLIENT_ID and the
  CA trust variables REQUESTS_CA_BUNDLE / SSL_CERT_FILE) into ``os.environ`` for this test only.
- ``inbox`` (function): the inbox web page on the session harness (started on first use): ``inbox.url``;
  ``inbox.connect_outbox(settings)`` shows that outbox's status rows and poison queue (until the test ends).
- ``outbox_settings`` (function): the settings dict for outbox against harness + Azurite (nothing in
  ``os.environ`` changes).

Trust and the environment: neither ``harness`` nor ``harness_factory`` touches ``os.environ``. The CA bundle
is a file (``harness.ca_bundle``); pass it explicitly (``OUTBOX_CA_BUNDLE`` in settings,
``connection_verify=`` for azure-core, an ``ssl.SSLContext`` for httpx) or ask for ``harness_env``, which
sets the variables through ``monkeypatch`` so they are undone after the test. REQUESTS_CA_BUNDLE replaces
requests' trust store for the whole process while set, hence the opt-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.azurite import Azurite
from harness.scenario import Scenario
from harness.up import Harness

ScenarioLike = Scenario | str | Path | None


def _as_scenario(scenario: ScenarioLike) -> Scenario:
    if scenario is None:
        return Scenario.default()
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Path) or (isinstance(scenario, str) and "\n" not in scenario and scenario.endswith(".toml")):
        return Scenario.from_file(scenario)
    return Scenario.from_toml(str(scenario))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    logs = tmp_path_factory.mktemp("azurite")
    instance = Azurite(log_file=logs / "azurite.log").start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def _harness_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    state = tmp_path_factory.mktemp("harness-state")
    instance = Harness.start(Scenario.default(), state)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def harness(_harness_session: Harness) -> Harness:
    _harness_session.reset()
    _harness_session.runtime.sync_down_services()
    return _harness_session


@pytest.fixture
def harness_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def factory(scenario: ScenarioLike = None, **kwargs: Any) -> Harness:
        state = kwargs.pop("state_dir", None) or tmp_path_factory.mktemp("harness")
        instance = Harness.start(_as_scenario(scenario), state, **kwargs)
        started.append(instance)
        return instance

    try:
        yield factory
    finally:
        for instance in reversed(started):
            instance.stop()


ENV_KEYS_PREFIXES = ("OUTBOX_", "IDENTITY_", "AZURE_CLIENT_ID", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


@pytest.fixture
def harness_env(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The harness's settings in os.environ for this test (undone afterwards)."""
    values = {k: v for k, v in harness.settings_values().items() if k.startswith(ENV_KEYS_PREFIXES)}
    for key in list(os.environ):
        if key.startswith("OUTBOX_") and key not in values:
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def outbox_settings(harness: Harness, azurite: Azurite) -> dict[str, str]:
    values = harness.settings_values()
    values["AzureWebJobsStorage"] = azurite.connection_string
    return values


@dataclass
class InboxPage:
    """The harness inbox page as a test sees it."""

    url: str
    harness: Harness

    def connect_outbox(self, settings: Mapping[str, str] | Callable[[], Mapping[str, str]] | None) -> None:
        """Show this outbox's side (its AzureWebJobsStorage, OUTBOX_QUEUE, OUTBOX_STATUS_TABLE); None hides it."""
        self.harness.connect_inbox(settings)


@pytest.fixture
def inbox(harness: Harness) -> Iterator[InboxPage]:
    page = InboxPage(harness.start_inbox(), harness)
    try:
        yield page
    finally:
        harness.connect_inbox(None)
