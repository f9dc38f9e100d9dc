"""One way for a test to wait for something outside it (a file, a row, a queue message, a process).

Tests never sleep a fixed time for an event: they poll the state they need with :func:`wait_until`,
which returns as soon as the state is there and fails with the test's own words when it never comes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(
    probe: Callable[[], T],
    timeout: float,
    *,
    poll_s: float = 0.1,
    sleep: Callable[[float], object] = time.sleep,
) -> T | None:
    """``probe()``'s first truthy answer within ``timeout`` seconds, polled every ``poll_s``; None when
    none came. ``sleep`` is how to pass the time between polls (a local Functions host's own wait keeps
    its timers running)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            return None
        sleep(poll_s)


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    *,
    message: str | Callable[[], str],
    poll_s: float = 0.1,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Like :func:`poll`, but a timeout fails the test with ``message`` (called then, to show the last
    state)."""
    got = poll(probe, timeout, poll_s=poll_s, sleep=sleep)
    if not got:
        raise AssertionError(message() if callable(message) else message)
    return got
