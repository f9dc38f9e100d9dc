"""Per-mailbox pacing: concurrency, sliding budgets and pauses, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import threading

import pytest

from shared.errors import OutboxError
from shared.pacing import BUSY_CODE, PAUSED_CODE, MailboxLimiter, Pacing
from shared.settings import load_settings


class FakeClock:
    """A clock whose sleep advances time: waits happen instantly and are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(clock: FakeClock, **overrides) -> MailboxLimiter:
    options = {
        "budget": 5,
        "window_s": 10.0,
        "max_wait_s": 2.0,
        "concurrency": 4,
        "slot_wait_s": 0.0,
        "clock": clock,
        "sleep": clock.sleep,
    }
    options.update(overrides)
    return MailboxLimiter("graph", **options)


def test_budget_allows_exactly_the_window_then_requeues_with_the_time_left():
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(5):
        lim.spend("a@x.example")
        clock.advance(1)
    # 5 spent at t=0..4; now t=5: the first leaves the window at t=10 (+0.1 s margin), 5.1 s away
    # (> max wait 2 s), re-queued for whole seconds, up to 1.5 s early (it may wait 2 s in process).
    with pytest.raises(OutboxError) as info:
        lim.spend("a@x.example")
    err = info.value
    assert (err.category, err.code, err.retryable, err.request_sent) == ("throttled", PAUSED_CODE, True, False)
    assert err.retry_after == 4.0
    assert err.transport == "graph"
    assert clock.sleeps == []


def test_short_wait_for_budget_is_waited_in_process():
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(5):
        lim.spend("a@x.example")
    clock.advance(8.5)  # the oldest unit leaves the window (+0.1 s margin) 1.6 s from now (<= 2 s)
    lim.spend("a@x.example")
    assert clock.sleeps == [pytest.approx(1.6)]
    assert lim.state("a@x.example").used_in_window == 1


def test_budget_is_per_mailbox_and_case_insensitive():
    clock = FakeClock()
    lim = limiter(clock, budget=2)
    lim.spend("A@X.example")
    lim.spend("a@x.example")
    with pytest.raises(OutboxError):
        lim.spend("a@x.EXAMPLE")
    lim.spend("b@x.example")  # another mailbox is untouched
    assert lim.state("b@x.example").used_in_window == 1


def test_pause_stops_only_that_mailbox_and_reports_the_remaining_time():
    clock = FakeClock()
    lim = limiter(clock)
    lim.pause("a@x.example", 30)
    with pytest.raises(OutboxError) as info, lim.slot("a@x.example"):
        pass
    assert info.value.code == PAUSED_CODE
    assert info.value.retry_after == 30.0
    with lim.slot("b@x.example"):
        pass
    clock.advance(29.5)
    with lim.slot("a@x.example"):  # 0.5 s left: waited, not re-queued
        pass
    assert clock.sleeps == [pytest.approx(0.5)]
    assert lim.paused_for("a@x.example") == 0.0


def test_a_shorter_pause_never_shortens_a_longer_one():
    clock = FakeClock()
    lim = limiter(clock)
    lim.pause("a@x.example", 60)
    lim.pause("a@x.example", 5)
    assert lim.paused_for("a@x.example") == pytest.approx(60)


def test_failed_acquire_releases_the_slot():
    clock = FakeClock()
    lim = limiter(clock, concurrency=1)
    lim.pause("a@x.example", 100)
    for _ in range(3):
        with pytest.raises(OutboxError), lim.slot("a@x.example"):
            pass
    assert lim.state("a@x.example").in_flight == 0
    clock.advance(100)
    with lim.slot("a@x.example"):
        assert lim.state("a@x.example").in_flight == 1


def test_concurrency_cap_then_busy_error():
    clock = FakeClock()
    lim = limiter(clock, concurrency=4, budget=100)
    slots = [lim.slot("a@x.example") for _ in range(4)]
    for s in slots:
        s.__enter__()
    assert lim.state("a@x.example").in_flight == 4
    with pytest.raises(OutboxError) as info, lim.slot("a@x.example"):
        pass
    assert (info.value.code, info.value.category, info.value.request_sent) == (BUSY_CODE, "throttled", False)
    with lim.slot("b@x.example"):  # the cap is per mailbox
        pass
    for s in slots:
        s.__exit__(None, None, None)
    assert lim.state("a@x.example").in_flight == 0


def test_a_waiter_gets_the_slot_another_thread_frees():
    clock = FakeClock()
    lim = limiter(clock, concurrency=1, budget=100, slot_wait_s=30.0)
    held = lim.slot("a@x.example")
    held.__enter__()
    entered = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        entered.set()
        with lim.slot("a@x.example"):
            done.set()

    t = threading.Thread(target=waiter)
    t.start()
    entered.wait(5)
    assert not done.wait(0.05)  # still blocked while the slot is held
    # A release for ANOTHER mailbox must not be lost on the waiter.
    with lim.slot("b@x.example"):
        pass
    held.__exit__(None, None, None)
    assert done.wait(5)
    t.join(5)


def test_cost_reserves_several_units_at_once():
    clock = FakeClock()
    lim = limiter(clock, budget=5)
    with lim.slot("a@x.example", cost=4):
        pass
    with pytest.raises(OutboxError), lim.slot("a@x.example", cost=2):
        pass
    with lim.slot("a@x.example", cost=1):
        pass
    with pytest.raises(ValueError):
        lim.spend("a@x.example", cost=6)


def test_pacing_from_settings_uses_the_settings():
    settings = load_settings(
        {
            "OUTBOX_QUEUE": "outbox",
            "AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a",
            "OUTBOX_GRAPH_CONCURRENCY": "2",
            "OUTBOX_GRAPH_BUDGET_REQUESTS": "7",
            "OUTBOX_SMTP_RATE_PER_WINDOW": "3",
            "OUTBOX_SMTP_RATE_WINDOW_S": "60",
            "OUTBOX_PACING_MAX_WAIT_S": "0",
        }
    )
    clock = FakeClock()
    pacing = Pacing.from_settings(settings, clock=clock, sleep=clock.sleep)
    assert (pacing.graph.concurrency, pacing.graph.budget) == (2, 7)
    for _ in range(3):
        pacing.smtp.spend("a@x.example")
    with pytest.raises(OutboxError) as info:
        pacing.smtp.spend("a@x.example")
    assert info.value.transport == "smtp"
    assert info.value.retry_after == 61.0  # the 60 s window plus its 0.6 s margin, in whole seconds
    pacing.pause("a@x.example", 10, transport="graph")
    assert pacing.graph.paused_for("a@x.example") == pytest.approx(10)
    assert pacing.smtp.paused_for("a@x.example") == 0.0


def test_a_unit_frees_only_after_the_window_plus_a_margin_for_the_servers_later_count():
    clock = FakeClock()
    lim = limiter(clock, budget=1, max_wait_s=0.0)
    lim.spend("a@x.example")
    clock.advance(10.0)  # exactly one window later: the server may still count the first request
    with pytest.raises(OutboxError):
        lim.spend("a@x.example")
    clock.advance(lim.margin_s)
    lim.spend("a@x.example")



def test_deferred_messages_get_successive_units_not_all_the_same_boundary():
    clock = FakeClock()
    lim = limiter(clock)  # 5 per 10 s, waits of up to 2 s in process
    for _ in range(5):
        lim.spend("a@x.example")
        clock.advance(1)
    delays = []
    for n in range(4):  # at t=5: four messages deferred
        with pytest.raises(OutboxError) as info:
            lim.spend("a@x.example", holder=f"m{n}")
        delays.append(info.value.retry_after)
    # Units free at 10.1, 11.1, 12.1, 13.1 (t=0..3 + 10 s + margin): one each, in the order deferred, each
    # told to come back up to 1.5 s early (it then waits in process for its unit). Without the promises all
    # four came back at 10.1 and three were deferred again.
    assert delays == [4.0, 5.0, 6.0, 7.0]
    clock.advance(5)  # t=10: m0 is back early and waits (in process) for its unit at 10.1
    lim.spend("a@x.example", holder="m0")
    assert clock.sleeps == [pytest.approx(0.1)]
    with pytest.raises(OutboxError):  # a newcomer may not take m1's unit (11.1), nor any promised one
        lim.spend("a@x.example", holder="new")
    clock.advance(1.0)  # t=11.1
    lim.spend("a@x.example", holder="m1")  # m1's unit is there for m1


def test_a_newcomer_may_not_take_a_unit_a_deferred_message_was_promised():
    clock = FakeClock()
    lim = limiter(clock, budget=2, window_s=10.0)
    lim.spend("a@x.example")  # t=0
    clock.advance(5)
    with pytest.raises(OutboxError) as info:  # a large send (2 requests) fits only when t=0's unit leaves
        lim.spend("a@x.example", cost=2, holder="large")
    assert info.value.retry_after == 4.0  # promised both units at 10.1 (asked back up to 1.5 s early)
    clock.advance(1)
    # t=6: one unit is free now, but spending it would leave only one for the promise at 10.1.
    with pytest.raises(OutboxError) as later:
        lim.spend("a@x.example", holder="small")
    assert later.value.retry_after >= 12.0  # its own turn: after the promised ones (10.1 + 10.1)
    clock.advance(5)  # t=11: the large send comes back and gets both units
    lim.spend("a@x.example", cost=2, holder="large")


def test_a_promise_nobody_comes_back_for_lapses():
    clock = FakeClock()
    lim = limiter(clock, budget=2, window_s=10.0)
    lim.spend("a@x.example", cost=2)
    clock.advance(1)
    with pytest.raises(OutboxError):  # promised the unit at 10.1
        lim.spend("a@x.example", holder="gone")
    clock.advance(9.2 + lim.promise_grace_s + 0.1)  # past the due time and its grace: it went elsewhere
    lim.spend("a@x.example", cost=2)  # both units free: the lapsed promise holds nothing
