"""Shared pytest set-up: the harness plugin (fixtures `harness`, `azurite`, `harness_factory`, ...) and
fixtures several test packages use."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from harness.azurite import Azurite

pytest_plugins = ["harness.fixtures"]


@pytest.fixture
def stallable() -> Iterator[Azurite]:
    """An emulator of this test's own, safe to stop with SIGSTOP: stopping the session's would stall every
    other test. Resumed (SIGCONT) before it is stopped, whatever the test left it in."""
    instance = Azurite().start()
    try:
        yield instance
    finally:
        if instance.pid:
            os.killpg(instance.pid, signal.SIGCONT)
        instance.stop()
