"""Outlook-style limits for the fake Graph and the fake Exchange SMTP.

Microsoft counts per app and mailbox across every connection and every instance of a client, so the
counters here are keyed by ``(app_id, mailbox)`` (Graph) or by mailbox (SMTP) and shared by all
connections the fakes serve. Every limit and window is a constructor argument: production-sized by
default, tiny in tests so that throttling and recovery happen in about a second.

The fakes run on one asyncio loop thread; the counters are still guarded by a lock because benchmarks
and tests may read them from other threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


def retry_after_seconds(wait_s: float) -> int:
    """Retry-After is whole seconds; round up so a client that honours it is never early."""
    return max(1, math.ceil(wait_s - 1e-9))


class ConcurrencyLimiter:
    """At most ``limit`` holders per key at once (Graph MailboxConcurrency, SMTP sender threads)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("concurrency limit must be at least 1")
        self.limit = limit
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def try_acquire(self, key: Hashable) -> bool:
        with self._lock:
            held = self._held.get(key, 0)
            if held >= self.limit:
                return False
            self._held[key] = held + 1
            return True

    def release(self, key: Hashable) -> None:
        with self._lock:
            held = self._held.get(key, 0) - 1
            if held <= 0:
                self._held.pop(key, None)
            else:
                self._held[key] = held

    def in_flight(self, key: Hashable) -> int:
        with self._lock:
            return self._held.get(key, 0)


class SlidingWindow:
    """A budget of ``limit`` units per key over any ``window_s`` seconds (a sliding log).

    Units are requests, messages or bytes. ``wait`` says how long until ``amount`` more would fit,
    which is what the fake puts in Retry-After ("seconds until the window frees").
    """

    def __init__(self, limit: float, window_s: float, clock: Clock = time.monotonic) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._log: dict[Hashable, deque[tuple[float, float]]] = {}
        self._used: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def _expire(self, key: Hashable, now: float) -> deque[tuple[float, float]]:
        log = self._log.setdefault(key, deque())
        horizon = now - self.window_s
        used = self._used.get(key, 0.0)
        while log and log[0][0] <= horizon:
            used -= log.popleft()[1]
        self._used[key] = max(0.0, used)
        return log

    def _wait_locked(self, key: Hashable, amount: float, now: float) -> float:
        log = self._expire(key, now)
        used = self._used[key]
        if used + amount <= self.limit:
            return 0.0
        if amount > self.limit:
            # Never fits; say "a whole window" rather than promising something false.
            return self.window_s
        # Walk the log until enough has expired for ``amount`` to fit.
        excess = used + amount - self.limit
        freed = 0.0
        for stamp, units in log:
            freed += units
            if freed >= excess:
                return stamp + self.window_s - now
        return self.window_s

    def wait(self, key: Hashable, amount: float = 1) -> float:
        """Seconds until ``amount`` would fit (0 when it fits now). Consumes nothing."""
        with self._lock:
            return self._wait_locked(key, amount, self._clock())

    def try_consume(self, key: Hashable, amount: float = 1) -> float:
        """Consume ``amount`` if it fits and return 0; else return the wait and consume nothing."""
        with self._lock:
            now = self._clock()
            wait = self._wait_locked(key, amount, now)
            if wait > 0:
                return wait
            self._log[key].append((now, amount))
            self._used[key] += amount
            return 0.0

    def consume(self, key: Hashable, amount: float = 1) -> None:
        """Record ``amount`` unconditionally (work already done that must count)."""
        with self._lock:
            now = self._clock()
            self._expire(key, now).append((now, amount))
            self._used[key] += amount

    def used(self, key: Hashable) -> float:
        with self._lock:
            self._expire(key, self._clock())
            return self._used[key]


class GraphLimitsLike(Protocol):
    """``harness.scenario.GraphLimits``: per app + mailbox, as on Graph's throttling-limits page."""

    @property
    def concurrency(self) -> int: ...

    @property
    def requests_per_window(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def upload_bytes_per_window(self) -> int: ...

    @property
    def upload_window_s(self) -> float: ...

    @property
    def rejected_requests_count(self) -> bool: ...

    @property
    def concurrency_retry_after_s(self) -> int: ...


class SmtpLimitsLike(Protocol):
    """``harness.scenario.SmtpLimits``: Exchange Online SMTP AUTH submission limits per mailbox."""

    @property
    def connections_per_mailbox(self) -> int: ...

    @property
    def messages_per_window(self) -> int: ...

    @property
    def window_s(self) -> float: ...

    @property
    def recipients_per_message(self) -> int: ...

    @property
    def max_message_bytes(self) -> int: ...


# Outlook does not document the Retry-After of a MailboxConcurrency 429; a short one is what clients see.
CONCURRENCY_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class GraphRejection:
    """Why a request was throttled; ``catalog`` is the entry name the fake answers with."""

    catalog: str
    retry_after: int


class GraphThrottle:
    """Concurrency, request budget and upload-bytes budget per (app_id, mailbox)."""

    def __init__(self, limits: GraphLimitsLike, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.concurrency = ConcurrencyLimiter(limits.concurrency)
        self.requests = SlidingWindow(limits.requests_per_window, limits.window_s, clock)
        self.upload_bytes = SlidingWindow(limits.upload_bytes_per_window, limits.upload_window_s, clock)

    def enter(self, app_id: str, mailbox: str, body_bytes: int = 0) -> GraphRejection | None:
        """Admit one request (then the caller must ``leave``) or say why not.

        Order as a client meets them: too many in flight, then the request budget, then incoming bytes.
        A rejected request consumes nothing, unless ``rejected_requests_count``: then a 429 for
        concurrency or budget is one more request in the window (Microsoft logs usage while throttled).
        """
        key = (app_id, mailbox.lower())
        counts = self.limits.rejected_requests_count
        if not self.concurrency.try_acquire(key):
            if counts:
                self.requests.consume(key)
            return GraphRejection("graph.mailbox_concurrency", self.limits.concurrency_retry_after_s)
        wait = self.requests.try_consume(key)
        if wait > 0:
            self.concurrency.release(key)
            if counts:
                self.requests.consume(key)
                wait = self.requests.wait(key)
            return GraphRejection("graph.request_budget", retry_after_seconds(wait))
        if body_bytes:
            wait = self.upload_bytes.try_consume(key, body_bytes)
            if wait > 0:
                self.concurrency.release(key)
                return GraphRejection("graph.incoming_bytes", retry_after_seconds(wait))
        return None

    def leave(self, app_id: str, mailbox: str) -> None:
        self.concurrency.release((app_id, mailbox.lower()))

    def in_flight(self, app_id: str, mailbox: str) -> int:
        return self.concurrency.in_flight((app_id, mailbox.lower()))


class SmtpThrottle:
    """Submission threads and message rate per mailbox, across every connection."""

    def __init__(self, limits: SmtpLimitsLike, clock: Clock = time.monotonic) -> None:
        self.limits = limits
        self.threads = ConcurrencyLimiter(limits.connections_per_mailbox)
        self.messages = SlidingWindow(limits.messages_per_window, limits.window_s, clock)

    def message_wait(self, mailbox: str) -> float:
        """Seconds until one more message fits the mailbox's rate (0: now). Consumes nothing."""
        return self.messages.wait(mailbox.lower())

    def take_message(self, mailbox: str) -> float:
        """Count one accepted message, or return the wait (and count nothing) when over the rate."""
        return self.messages.try_consume(mailbox.lower())
