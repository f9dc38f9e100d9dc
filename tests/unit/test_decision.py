"""shared.decision.decide as a table: every rule of what follows a failed attempt, no storage."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from shared.decision import Action, Attempt, decide
from shared.errors import OutboxError
from shared.states import Kind, State


@dataclass(frozen=True)
class Rules:
    on_ambiguous: str = "lookup"
    max_attempts: int = 4
    backoff_base_s: float = 10.0
    backoff_max_s: float = 100.0
    retry_after_max_s: float = 60.0
    max_age_s: float = 86400.0
    lookup_settle_s: float = 0.0


TRANSIENT = OutboxError("transient", "serviceNotAvailable", status=503, retryable=True)
THROTTLED = OutboxError("throttled", "ApplicationThrottled", status=429, retryable=True, retry_after=7)
HUGE_RETRY_AFTER = OutboxError("throttled", "ApplicationThrottled", status=429, retryable=True, retry_after=9999)
PERMANENT = OutboxError("recipient", "ErrorInvalidRecipients", status=400)
SERVER_500 = OutboxError("transient", "generalException", status=500, retryable=True)
AMBIGUOUS = OutboxError("transient", "gatewayTimeout", status=504, retryable=True, request_sent=True,
                        maybe_delivered=True)
PAUSED = OutboxError("throttled", "outbox.paused", retryable=True, retry_after=3)
BUSY = OutboxError("throttled", "outbox.busy", retryable=True)
TOKEN_535 = OutboxError("auth", "5.7.3", status=535, retryable=True, max_retries=1, refresh_credentials=True)
TWICE = OutboxError("unknown", "outbox.unexpected", retryable=True, max_retries=2)
SMTP_432 = OutboxError("throttled", "4.3.2", status=432, transport="smtp", retryable=True)

# (error, attempt, previous state, after ambiguous, lookup, now, rules) -> (action, state, delay, attempts, flags)
CASES = [
    # transient: backoff with equal jitter in [base*2^(n-1)/2, base*2^(n-1)], capped
    ("transient 1st", TRANSIENT, 1, None, False, None, False, Rules(), Action.RETRY, State.RETRYING, (5, 10), None),
    ("transient 3rd", TRANSIENT, 3, "retrying", False, None, False, Rules(), Action.RETRY, State.RETRYING, (20, 40), None),
    ("transient capped", TRANSIENT, 3, "retrying", False, None, False, Rules(max_attempts=9, backoff_max_s=15),
     Action.RETRY, State.RETRYING, (7.5, 15), None),
    ("transient last", TRANSIENT, 4, "retrying", False, None, False, Rules(), Action.POISON, State.POISONED, None, None),
    # Retry-After wins over backoff, capped
    # throttling spends no attempt: deferred after Retry-After (capped), whatever the attempt count
    ("429 retry-after", THROTTLED, 1, None, False, None, False, Rules(), Action.DEFER, State.RETRYING, (7, 7), 0),
    ("429 retry-after capped", HUGE_RETRY_AFTER, 1, None, False, None, False, Rules(), Action.DEFER,
     State.RETRYING, (60, 60), 0),
    ("429 past max attempts", THROTTLED, 9, "retrying", False, None, False, Rules(), Action.DEFER, State.RETRYING,
     (7, 7), 8),
    ("432 no retry-after", SMTP_432, 2, "retrying", False, None, False, Rules(), Action.DEFER, State.RETRYING,
     (5, 10), 1),
    # permanent: poisoned at once, whatever the attempt
    ("permanent", PERMANENT, 1, None, False, None, False, Rules(), Action.POISON, State.POISONED, None, None),
    # our own pacing: deferred, the attempt given back, never a retry state for a message never tried
    ("paused new", PAUSED, 1, None, False, None, False, Rules(), Action.DEFER, State.QUEUED, (3, 3), 0),
    ("paused queued", PAUSED, 1, "queued", False, None, False, Rules(), Action.DEFER, State.QUEUED, (3, 3), 0),
    ("paused retrying", PAUSED, 3, "retrying", False, None, False, Rules(), Action.DEFER, State.RETRYING, (3, 3), 2),
    ("busy", BUSY, 2, "retrying", False, None, False, Rules(), Action.DEFER, State.RETRYING, (1, 1), 1),
    ("paused at the limit", PAUSED, 4, "retrying", False, None, False, Rules(), Action.DEFER, State.RETRYING,
     (3, 3), 3),
    ("paused after ambiguous", PAUSED, 2, "ambiguous", True, None, False, Rules(), Action.DEFER, State.AMBIGUOUS,
     (3, 3), 1),
    # ambiguous: never resent in the same invocation; ambiguous row; poison policy; the limit
    ("ambiguous", AMBIGUOUS, 1, None, False, None, False, Rules(), Action.RETRY, State.AMBIGUOUS, (5, 10), None),
    ("ambiguous, poison policy", AMBIGUOUS, 1, None, False, None, False, Rules(on_ambiguous="poison"),
     Action.POISON, State.POISONED, None, None),
    ("ambiguous, poison policy, now", AMBIGUOUS, 1, None, False, None, True, Rules(on_ambiguous="poison"),
     Action.RETRY, State.AMBIGUOUS, (5, 10), None),
    ("ambiguous last", AMBIGUOUS, 4, "ambiguous", True, None, False, Rules(), Action.POISON, State.POISONED,
     None, None),
    # after an ambiguous attempt: a lookup that found nothing settles it; one that could not know does not
    ("after ambiguous, lookup miss", SERVER_500, 2, "ambiguous", True, False, False, Rules(), Action.RETRY,
     State.RETRYING, (10, 20), None),
    # ... unless the resend then hears "busy" (503, 429): the earlier send may still be at work, so the next
    # attempt looks again first (after a 504 the backend may hold the slot and deliver late)
    ("after ambiguous, lookup miss, then 503", TRANSIENT, 2, "ambiguous", True, False, False, Rules(), Action.RETRY,
     State.AMBIGUOUS, (10, 20), None),
    ("after ambiguous, lookup miss, then 429", THROTTLED, 2, "ambiguous", True, False, False, Rules(), Action.DEFER,
     State.AMBIGUOUS, (7, 7), 1),
    ("after ambiguous, lookup miss, then our own pause", PAUSED, 2, "ambiguous", True, False, False, Rules(),
     Action.DEFER, State.RETRYING, (3, 3), 1),
    ("after ambiguous, no lookup", TRANSIENT, 2, "ambiguous", True, None, False, Rules(), Action.RETRY,
     State.AMBIGUOUS, (10, 20), None),
    # the catalog's own retry budget, with the in-process fresh-token retry counted
    ("535 first", TOKEN_535, 1, None, False, None, False, Rules(), Action.POISON, State.POISONED, None, None),
    ("twice 1st", TWICE, 1, None, False, None, False, Rules(), Action.RETRY, State.RETRYING, (5, 10), None),
    ("twice 2nd", TWICE, 2, "retrying", False, None, False, Rules(), Action.RETRY, State.RETRYING, (10, 20), None),
    ("twice 3rd", TWICE, 3, "retrying", False, None, False, Rules(), Action.POISON, State.POISONED, None, None),
]


@pytest.mark.parametrize(
    "err, number, previous, after_ambiguous, lookup, now, rules, action, state, delay, attempts",
    [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(err: OutboxError, number: int, previous: str | None, after_ambiguous: bool, lookup: bool | None,
                now: bool, rules: Rules, action: Action, state: State, delay: tuple[float, float] | None,
                attempts: int | None) -> None:
    decision = decide(err, Attempt(number, previous, after_ambiguous=after_ambiguous, lookup=lookup, now_mode=now),
                      rules, rng=random.Random(1))
    assert (decision.action, decision.state) == (action, state)
    if delay is None:
        assert decision.delay_s is None
    else:
        assert decision.delay_s is not None and delay[0] <= decision.delay_s <= delay[1]
    assert decision.attempts == attempts


@dataclass(frozen=True)
class Young(Rules):
    max_age_s: float = 3600.0


def test_throttling_counts_tries_not_attempts_until_the_age_limit() -> None:
    for n in range(1, 30):
        d = decide(THROTTLED, Attempt(1, "retrying", age_s=10.0 * n, throttled=n - 1), Young(), rng=random.Random(1))
        assert (d.action, d.attempts, d.throttled) == (Action.DEFER, 0, n)
    old = decide(THROTTLED, Attempt(3, "retrying", age_s=3600.0, throttled=41), Young(), rng=random.Random(1))
    assert (old.action, old.state, old.throttled, old.attempts) == (Action.POISON, State.POISONED, 42, 2)
    assert old.error.category == "throttled" and old.error.retryable is False and old.exhausted
    assert "throttled 42 times over 3600 s" in (old.error.detail or "")


def test_backoff_grows_with_throttled_tries_when_no_retry_after() -> None:
    first = decide(SMTP_432, Attempt(1, None, throttled=0), Rules(), rng=random.Random(1))
    later = decide(SMTP_432, Attempt(1, None, throttled=3), Rules(), rng=random.Random(1))
    assert first.delay_s is not None and later.delay_s is not None and later.delay_s > first.delay_s


def test_spent_catalog_retries_poison_as_not_retryable_and_exhausted() -> None:
    decision = decide(TOKEN_535, Attempt(1, None), Rules(), rng=random.Random(1))
    assert decision.error.retryable is False and decision.exhausted and decision.kind is Kind.POISONED
    limit = decide(TRANSIENT, Attempt(4, "retrying"), Rules(), rng=random.Random(1))
    # Spending OUTBOX_MAX_ATTEMPTS is not the error's fault: a requeue may still succeed.
    assert limit.error.retryable is True and limit.exhausted


def test_permanent_and_invalid_are_not_exhausted() -> None:
    for err in (PERMANENT, OutboxError("invalid_message", "attachment.blob_not_found", retryable=True)):
        decision = decide(err, Attempt(1, None), Rules(), rng=random.Random(1))
        assert decision.action is Action.POISON and not decision.exhausted


def test_the_kind_follows_the_action() -> None:
    assert decide(PAUSED, Attempt(1, None), Rules(), rng=random.Random(1)).kind is Kind.DEFERRED
    assert decide(TRANSIENT, Attempt(1, None), Rules(), rng=random.Random(1)).kind is Kind.RETRY
    assert decide(AMBIGUOUS, Attempt(1, None), Rules(), rng=random.Random(1)).ambiguous
