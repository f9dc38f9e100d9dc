"""Per-mailbox limits kept inside one process, so outbox paces itself instead of collecting 429s.

Microsoft counts per app and mailbox: Graph allows 4 concurrent requests and 10,000 requests per
10 minutes per mailbox; Exchange SMTP allows 30 messages per minute and 3 connections per mailbox.
Each :class:`MailboxLimiter` holds, per mailbox:

* a concurrency cap (requests in flight), waited for like a semaphore;
* a sliding-window budget (requests or messages per window);
* a pause set after a 429 / Retry-After, which stops THAT mailbox only.

When a mailbox is paused or over budget, a caller waits if the wait is short
(``OUTBOX_PACING_MAX_WAIT_S``); otherwise it gets ``OutboxError(category="throttled",
code="outbox.paused", retryable=True, request_sent=False, retry_after=<seconds>)`` so the pipeline
re-queues the message with that delay instead of holding a worker thread.

The clock and the sleep are injected, so the unit tests drive time without sleeping.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.errors import OutboxError

if TYPE_CHECKING:
    from shared.ports import BudgetPort, SlotPort
    from shared.settings import Settings

Clock = Callable[[], float]
Sleep = Callable[[float], None]

PAUSED_CODE = "outbox.paused"
BUSY_CODE = "outbox.busy"


def mailbox_busy(transport: str | None, detail: str, hint: str) -> OutboxError:
    """Every slot for a mailbox in this process stayed taken (Graph requests in flight, SMTP sessions):
    nothing was sent; the message is re-queued shortly."""
    return OutboxError("throttled", BUSY_CODE, transport=transport, retryable=True, request_sent=False,
                       retry_after=1.0, detail=detail, hint=hint)


@dataclass(frozen=True)
class MailboxState:
    """What a limiter knows about one mailbox right now (for doctor, logs and tests)."""

    mailbox: str
    in_flight: int
    used_in_window: int
    paused_for_s: float


class _Mailbox:
    __slots__ = ("holders", "in_flight", "log", "paused_until", "promised")

    def __init__(self) -> None:
        self.in_flight = 0
        self.log: deque[float] = deque()
        self.paused_until = 0.0
        # Budget units promised to deferred messages, by due time, ascending: each deferral gets the next
        # unit that frees after those promised before it, so deferred mail comes back one unit at a time
        # instead of all at the window boundary to be deferred again.
        self.promised: deque[float] = deque()
        self.holders: dict[str, tuple[float, int]] = {}  # message -> (due, units) of its promise


class LocalSlots:
    """``SlotPort`` counted in this process (``OUTBOX_SLOTS=local``): right for one instance, or for
    several that each get a static share (``OUTBOX_GRAPH_CONCURRENCY`` = floor(4 / instances))."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.idle_s = math.inf  # nobody else wants them
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}
        # One condition per mailbox over one lock: a freed slot wakes a waiter of THIS mailbox only.
        self._freed: dict[str, threading.Condition] = {}

    def take(self, mailbox: str, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        with self._lock:
            freed = self._freed.get(mailbox)
            if freed is None:
                freed = self._freed[mailbox] = threading.Condition(self._lock)
            while self._busy.get(mailbox, 0) >= self.capacity:
                # Real time: slots are freed by other threads finishing, never by an injected clock.
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not freed.wait(remaining):
                    if self._busy.get(mailbox, 0) < self.capacity:
                        break
                    return False
            self._busy[mailbox] = self._busy.get(mailbox, 0) + 1
            return True

    def give_back(self, mailbox: str) -> None:
        with self._lock:
            self._busy[mailbox] = max(0, self._busy.get(mailbox, 0) - 1)
            freed = self._freed.get(mailbox)
            if freed is not None:
                freed.notify()

    def close(self) -> None:
        """Nothing is held outside this process."""


class MailboxLimiter:
    """Concurrency + sliding-window budget + pause, per mailbox, for one service (Graph or SMTP).

    ``concurrency=None`` means no in-flight cap (SMTP: the session pool is the cap); ``slots`` puts the
    cap in a shared store (:class:`shared.ports.SlotPort`) instead of this process.
    ``slot_wait_s`` bounds how long a caller waits for a free concurrency slot: requests in flight
    end on their own, so this wait is allowed to be longer than ``max_wait_s``.
    """

    def __init__(
        self,
        service: str,
        *,
        budget: int,
        window_s: float,
        max_wait_s: float,
        concurrency: int | None = None,
        slots: SlotPort | None = None,
        shared_budget: BudgetPort | None = None,
        slot_wait_s: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        if budget < 1 or window_s <= 0:
            raise ValueError("budget must be >= 1 and window_s > 0")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.service = service
        self.budget = budget
        self.window_s = window_s
        # We log a request when we let it go; the server counts it when it arrives, a little later.
        # Freeing our unit exactly one window later would let the next request reach the server
        # just before the server's own unit expires (a 429 at every window boundary).
        self.margin_s = min(1.0, window_s / 100)
        self.max_wait_s = max(0.0, max_wait_s)
        self.concurrency = slots.capacity if slots is not None else concurrency
        self._shared_budget = shared_budget
        self._slots: SlotPort | None = slots if slots is not None else (
            LocalSlots(concurrency) if concurrency is not None else None)
        self.slot_wait_s = self.max_wait_s if slot_wait_s is None else max(0.0, slot_wait_s)
        self._clock = clock
        self._sleep = sleep
        # How long a deferred message's unit waits for it past its due time before others may not rely on
        # it (a re-queued message comes back after the queue's visibility delay and the host's polling).
        self.promise_grace_s = max(2 * self.max_wait_s, 1.0)
        self.return_lead_s = 0.75 * self.max_wait_s
        self._lock = threading.Lock()
        self._mailboxes: dict[str, _Mailbox] = {}

    # -- public ---------------------------------------------------------------------------------

    @contextmanager
    def slot(self, mailbox: str, *, cost: int = 1, holder: str | None = None) -> Iterator[None]:
        """Hold one in-flight slot and spend ``cost`` budget units for the duration of the block.

        A multi-request operation (draft + upload session + send) takes one slot, because its
        requests run one after another, and spends one unit per request up front so that it is
        never stopped halfway by its own budget. ``holder`` names the message (its Message-ID): a message
        deferred for budget is promised its own unit, and only it may take that unit when it comes back.
        """
        key = _key(mailbox)
        self._take_slot(key)
        try:
            self._spend(key, cost, holder)
        except BaseException:
            self._give_back(key)
            raise
        try:
            yield
        finally:
            self._give_back(key)

    def spend(self, mailbox: str, cost: int = 1, holder: str | None = None) -> None:
        """Spend budget without holding a slot (SMTP messages: the session pool caps concurrency)."""
        self._spend(_key(mailbox), cost, holder)

    def pause(self, mailbox: str, seconds: float) -> None:
        """Stop this mailbox for ``seconds`` (a later, longer pause wins; a shorter one never shortens)."""
        if seconds <= 0:
            return
        key = _key(mailbox)
        with self._lock:
            box = self._box(key)
            box.paused_until = max(box.paused_until, self._clock() + seconds)

    def paused_for(self, mailbox: str) -> float:
        with self._lock:
            box = self._mailboxes.get(_key(mailbox))
            return max(0.0, box.paused_until - self._clock()) if box else 0.0

    def state(self, mailbox: str) -> MailboxState:
        key = _key(mailbox)
        with self._lock:
            now = self._clock()
            box = self._box(key)
            self._expire(box, now)
            return MailboxState(key, box.in_flight, len(box.log), max(0.0, box.paused_until - now))

    # -- internals ------------------------------------------------------------------------------

    def _box(self, key: str) -> _Mailbox:
        box = self._mailboxes.get(key)
        if box is None:
            box = self._mailboxes[key] = _Mailbox()
        return box

    def _expire(self, box: _Mailbox, now: float) -> None:
        horizon = now - self.window_s - self.margin_s
        log = box.log
        while log and log[0] <= horizon:
            log.popleft()
        # A promise nobody came back for (the message went to another instance, or was late) lapses.
        promised = box.promised
        horizon = now - self.promise_grace_s
        if promised and promised[0] < horizon:
            while promised and promised[0] < horizon:
                promised.popleft()
            for holder in [h for h, (due, _) in box.holders.items() if due < horizon]:
                del box.holders[holder]

    def _take_slot(self, key: str) -> None:
        if self._slots is not None and not self._slots.take(key, self.slot_wait_s):
            raise mailbox_busy(
                self._transport,
                f"{self._slots.capacity} {self.service} requests already in flight for {key} "
                f"after waiting {self.slot_wait_s:g} s",
                "the mailbox is busy; the message is re-queued",
            )
        with self._lock:
            self._box(key).in_flight += 1

    def _give_back(self, key: str) -> None:
        with self._lock:
            box = self._box(key)
            box.in_flight = max(0, box.in_flight - 1)
        if self._slots is not None:
            self._slots.give_back(key)

    def _spend(self, key: str, cost: int, holder: str | None = None) -> None:
        if cost > self.budget:
            raise ValueError(f"cost {cost} exceeds the whole budget {self.budget}")
        entitled = False  # it came back for its promise: it waits only for the window, not behind others
        while True:
            with self._lock:
                now = self._clock()
                box = self._box(key)
                self._expire(box, now)
                promise = box.holders.get(holder) if holder else None
                if promise is not None and promise[0] <= now:
                    entitled = True
                    # Back for the unit it was promised: it is this message's, nobody else's; only the
                    # window itself (what Graph counts) can still hold it back.
                    self._drop_promise(box, holder or "", promise)
                    promise = None
                if promise is not None:
                    wait, reason = promise[0] - now, "keeping its turn"  # came back early
                else:
                    wait, reason = self._wait_needed(box, now, cost, promises=not entitled)
                if wait <= 0:
                    box.log.extend([now] * cost)
                elif wait > self.max_wait_s:
                    # Over budget: a promise of its own unit. Paused: everyone waits for the same end.
                    lead = 0.0
                    if box.paused_until > now:
                        due = now + wait  # the server's Retry-After: never early
                    else:
                        due = promise[0] if promise is not None else self._promise(box, now, cost, holder)
                        lead = self.return_lead_s
                    raise self._deferred(key, reason, due - now, lead)
            if wait > 0:
                self._sleep(wait)
                continue
            if self._shared_budget is None:
                return
            # This process's own budget allows it; the budget every instance shares must too.
            shared_wait = self._shared_budget.take(key, cost)
            if shared_wait <= 0:
                return
            with self._lock:
                for _ in range(cost):
                    with contextlib.suppress(ValueError):
                        box.log.remove(now)
            reason = f"over the budget of {self.budget} per {self.window_s:g} s its instances share"
            if shared_wait > self.max_wait_s:
                raise self._deferred(key, reason, shared_wait, 0.0)
            self._sleep(shared_wait)

    def _deferred(self, key: str, reason: str, wait: float, lead: float) -> OutboxError:
        return OutboxError(
            "throttled",
            PAUSED_CODE,
            transport=self._transport,
            retryable=True,
            request_sent=False,
            # A promised unit: a little early, since a re-queued message returns late more often than not
            # (polling), and one that is early waits here for its unit (up to OUTBOX_PACING_MAX_WAIT_S).
            retry_after=float(max(1, math.ceil(wait - lead))),
            detail=f"{self.service} for {key} is {reason}; {wait:.1f} s to its turn",
            hint="outbox paces each mailbox under Microsoft's limits; the message is re-queued",
        )

    def _drop_promise(self, box: _Mailbox, holder: str, promise: tuple[float, int]) -> None:
        due, units = promise
        del box.holders[holder]
        kept = list(box.promised)
        for _ in range(units):
            with contextlib.suppress(ValueError):
                kept.remove(due)
        box.promised = deque(kept)

    def _wait_needed(self, box: _Mailbox, now: float, cost: int, *, promises: bool = True) -> tuple[float, str]:
        paused = box.paused_until - now
        if paused > 0:
            return paused, "paused after the server throttled it"
        if not promises:
            over = len(box.log) + cost - self.budget
            if over > 0:
                return box.log[over - 1] + self.window_s + self.margin_s - now, (
                    f"over its budget of {self.budget} per {self.window_s:g} s")
            return 0.0, ""
        if len(box.log) + len(box.promised) + cost > self.budget and not self._fits(box, now, cost):
            # Deferred messages hold promises: a newcomer may use a unit now only if every promise still
            # fits its window; otherwise it waits behind them.
            return self._free_at(box, now, cost) - now, f"over its budget of {self.budget} per {self.window_s:g} s"
        return 0.0, ""

    def _fits(self, box: _Mailbox, now: float, cost: int) -> bool:
        """Whether ``cost`` units spent now fit the window now and at every promise due within a window."""
        events = sorted([*box.log, *box.promised])
        span = self.window_s + self.margin_s
        for t in (now, *(d for d in box.promised if now < d < now + span)):
            inside = bisect.bisect_right(events, t) - bisect.bisect_right(events, t - span)
            if inside + cost > self.budget:
                return False
        return True

    def _free_at(self, box: _Mailbox, now: float, cost: int) -> float:
        """The earliest time, after every promise already made, when ``cost`` more units fit every window."""
        events = sorted([*box.log, *box.promised])
        span = self.window_s + self.margin_s
        start = max(now, box.promised[-1] if box.promised else now)
        candidates = [start, *(e + span for e in events if e + span > start)]
        for t in candidates:
            # Units counted at t: those spent or promised in (t - span, t].
            inside = bisect.bisect_right(events, t) - bisect.bisect_right(events, t - span)
            if inside + cost <= self.budget:
                return t
        return (events[-1] if events else now) + span  # pragma: no cover - the last candidate always fits

    def _promise(self, box: _Mailbox, now: float, cost: int, holder: str | None) -> float:
        due = self._free_at(box, now, cost)
        if holder:  # an anonymous caller cannot come back for a promise: it only learns when to retry
            box.promised.extend([due] * cost)
            box.holders[holder] = (due, cost)
        return due

    @property
    def _transport(self) -> str | None:
        return self.service if self.service in ("graph", "smtp") else None


@dataclass(frozen=True)
class MailboxSlots:
    """What a store shares between instances: Graph requests in flight, SMTP connections, and the Graph
    request budget (None: each process keeps its own)."""

    graph: SlotPort
    smtp: SlotPort
    graph_budget: BudgetPort | None = None


class Pacing:
    """The process's limiters: ``graph`` (concurrency + request budget) and ``smtp`` (message rate), and
    ``smtp_slots``, which the SMTP session pool takes one of per open connection."""

    def __init__(self, graph: MailboxLimiter, smtp: MailboxLimiter, smtp_slots: SlotPort | None = None) -> None:
        self.graph = graph
        self.smtp = smtp
        self.smtp_slots: SlotPort = smtp_slots or LocalSlots(3)

    @classmethod
    def from_settings(cls, settings: Settings, *, slots: MailboxSlots | None = None, clock: Clock = time.monotonic,
                      sleep: Sleep = time.sleep) -> Pacing:
        """``slots``: a shared store's (``OUTBOX_SLOTS=blob``, built with the stores); else counted here."""
        graph = MailboxLimiter(
            "graph",
            budget=settings.graph_budget_requests,
            window_s=settings.graph_budget_window_s,
            max_wait_s=settings.pacing_max_wait_s,
            slots=slots.graph if slots is not None else LocalSlots(settings.graph_concurrency),
            shared_budget=slots.graph_budget if slots is not None else None,
            # A slot frees when a request ends, and a request never outlives the HTTP timeout.
            slot_wait_s=max(settings.pacing_max_wait_s, settings.http_timeout_s),
            clock=clock,
            sleep=sleep,
        )
        smtp = MailboxLimiter(
            "smtp",
            budget=settings.smtp_rate_per_window,
            window_s=settings.smtp_rate_window_s,
            max_wait_s=settings.pacing_max_wait_s,
            clock=clock,
            sleep=sleep,
        )
        return cls(graph, smtp, slots.smtp if slots is not None else LocalSlots(settings.smtp_connections))

    def limiter(self, transport: str) -> MailboxLimiter:
        if transport == "graph":
            return self.graph
        if transport == "smtp":
            return self.smtp
        raise ValueError(f"no limiter for transport {transport!r}")

    def pause(self, mailbox: str, seconds: float, *, transport: str = "graph") -> None:
        self.limiter(transport).pause(mailbox, seconds)


def _key(mailbox: str) -> str:
    return mailbox.strip().lower()
