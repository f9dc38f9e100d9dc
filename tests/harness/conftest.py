"""Clients of the session harness's fakes that several test modules of this package use."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from harness.up import Harness


@pytest.fixture(scope="module")
def tls(_harness_session: Harness) -> ssl.SSLContext:
    """Trusts the harness's test CA, as outbox does (one context per module: loading the CA costs ~20 ms)."""
    return ssl.create_default_context(cafile=str(_harness_session.ca_bundle))


@pytest.fixture
def client(harness: Harness, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    """The fake Graph with an app token (test_inbox_server.py has a client of its own for the inbox page)."""
    with httpx.Client(
        base_url=harness.url("graph"),
        verify=tls,
        headers={"Authorization": f"Bearer {harness.mint_token('graph')}"},
        timeout=10,
    ) as http:
        yield http
