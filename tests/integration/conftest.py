"""Fixtures shared by the transport, token and certificate tests: the harness with the managed-identity
variables set (what the Functions platform gives the function), and Senders built from its settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.senders import Senders
from tests.integration.transport_support import identity_environment, settings_for


@pytest.fixture
def fakes(harness: Any) -> Iterator[Any]:
    """The session harness (reset before each test) with the managed-identity variables set."""
    with identity_environment(harness):
        yield harness


@pytest.fixture
def own_fakes(harness_factory: Callable[..., Any]) -> Iterator[Any]:
    """A harness of this test's own: rotation changes the vault for good."""
    started = harness_factory()
    with identity_environment(started):
        yield started


@pytest.fixture
def make_senders() -> Iterator[Callable[..., Senders]]:
    made: list[Senders] = []

    def factory(fakes: Any, **overrides: str) -> Senders:
        senders = Senders.from_settings(settings_for(fakes, **overrides))
        made.append(senders)
        return senders

    yield factory
    for senders in made:
        senders.close()


@pytest.fixture
def senders(fakes: Any, make_senders: Callable[..., Senders]) -> Senders:
    return make_senders(fakes)
