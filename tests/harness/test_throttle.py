"""Outlook-style limiters, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import pytest

from harness.scenario import GraphLimits, SmtpLimits
from harness.throttle import (
    CONCURRENCY_RETRY_AFTER_S,
    ConcurrencyLimiter,
    GraphThrottle,
    SlidingWindow,
    SmtpThrottle,
    retry_after_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_frees_exactly_when_the_oldest_use_leaves() -> None:
    clock = Clock()
    window = SlidingWindow(3, 10.0, clock)
    for offset in (0.0, 2.0, 4.0):
        clock.now = 1000.0 + offset
        assert window.try_consume("k") == 0
    clock.now = 1005.0
    assert window.try_consume("k") == pytest.approx(5.0)  # the use at t=1000 leaves at t=1010
    assert window.used("k") == 3  # a refused request consumed nothing
    clock.now = 1010.0
    assert window.try_consume("k") == 0
    assert window.wait("k") == pytest.approx(2.0)


def test_sliding_window_counts_units_and_keys_apart() -> None:
    clock = Clock()
    window = SlidingWindow(100, 60.0, clock)
    assert window.try_consume("a", 70) == 0
    assert window.try_consume("a", 40) == pytest.approx(60.0)
    assert window.try_consume("b", 100) == 0
    assert window.try_consume("a", 500) == 60.0  # can never fit: a whole window, not a false promise
    window.consume("a", 40)  # work already done still counts
    assert window.used("a") == 110


def test_concurrency_limiter() -> None:
    limiter = ConcurrencyLimiter(2)
    assert limiter.try_acquire("m") and limiter.try_acquire("m")
    assert not limiter.try_acquire("m")
    assert limiter.try_acquire("other")
    limiter.release("m")
    assert limiter.in_flight("m") == 1
    assert limiter.try_acquire("m")
    limiter.release("nobody")  # tolerated: releasing what a replaced limiter handed out
    assert limiter.in_flight("nobody") == 0


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.2) == 2


def test_graph_throttle_order_and_no_charge_for_rejections() -> None:
    clock = Clock()
    limits = GraphLimits(concurrency=1, requests_per_window=2, window_s=10.0,
                         upload_bytes_per_window=100, upload_window_s=60.0)
    throttle = GraphThrottle(limits, clock)
    assert throttle.enter("app", "Sender@x") is None
    busy = throttle.enter("app", "sender@x")
    assert busy is not None and (busy.catalog, busy.retry_after) == ("graph.mailbox_concurrency", CONCURRENCY_RETRY_AFTER_S)
    assert throttle.enter("other-app", "sender@x") is None  # per app + mailbox
    throttle.leave("other-app", "sender@x")
    throttle.leave("app", "sender@x")
    clock.now += 3
    assert throttle.enter("app", "sender@x", body_bytes=60) is None
    throttle.leave("app", "sender@x")
    budget = throttle.enter("app", "sender@x")
    assert budget is not None and budget.catalog == "graph.request_budget"
    assert budget.retry_after == 7  # the first request leaves the 10 s window 7 s from now
    assert throttle.in_flight("app", "sender@x") == 0
    clock.now += 7
    too_many_bytes = throttle.enter("app", "sender@x", body_bytes=60)
    assert too_many_bytes is not None and too_many_bytes.catalog == "graph.incoming_bytes"
    assert too_many_bytes.retry_after == 53  # the 60 bytes sent at +3 s leave the 60 s window at +63 s


def test_smtp_throttle_counts_messages_per_mailbox() -> None:
    clock = Clock()
    throttle = SmtpThrottle(SmtpLimits(messages_per_window=2, window_s=60.0, connections_per_mailbox=3), clock)
    assert throttle.take_message("A@x") == 0
    assert throttle.take_message("a@x") == 0
    assert throttle.message_wait("a@x") == pytest.approx(60.0)
    assert throttle.take_message("a@x") == pytest.approx(60.0)
    assert throttle.take_message("b@x") == 0
    assert [throttle.threads.try_acquire("a@x") for _ in range(4)] == [True, True, True, False]


def test_rejected_requests_count_against_the_budget_when_the_scenario_says_so() -> None:
    # Microsoft: "all requests accrue against your usage limits"; a client retrying at once stays throttled.
    for counts, expect in ((False, None), (True, "graph.request_budget")):
        clock = Clock()
        throttle = GraphThrottle(GraphLimits(concurrency=1, requests_per_window=2, window_s=10.0,
                                             rejected_requests_count=counts, concurrency_retry_after_s=3), clock)
        assert throttle.enter("app", "sender@x") is None
        busy = throttle.enter("app", "sender@x")  # a 2nd in flight: 429 MailboxConcurrency
        assert busy is not None and (busy.catalog, busy.retry_after) == ("graph.mailbox_concurrency", 3)
        throttle.leave("app", "sender@x")
        third = throttle.enter("app", "sender@x")
        assert (third.catalog if third else None) == expect
        if third is not None:
            # The rejections themselves filled the window: the 429 counted too, so waiting is longer.
            assert throttle.enter("app", "sender@x") is not None
            assert throttle.requests.used(("app", "sender@x")) == 4
