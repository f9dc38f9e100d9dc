"""What becomes of a message after a failed attempt: one pure function of the error, the attempt and the
row, so every rule is in one place and tested as a table (tests/unit/test_decision.py).

The pipeline carries the decision out the same way whatever it says: write the row, then answer the HTTP
caller (``mode=now``) or put the message back on the queue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from shared.backoff import retry_delay_s
from shared.errors import OutboxError
from shared.states import Kind, State

# A paused or saturated mailbox (our own pacing) is not the message's fault.
PAUSED_CODES = frozenset({"outbox.paused", "outbox.busy"})


class Action(StrEnum):
    POISON = "poison"  # permanent: an envelope (mode=now: the answer) and the row says so
    RETRY = "retry"  # another attempt later, counted
    DEFER = "defer"  # another attempt later, not counted (the mailbox was paused or busy)


class RetryRules(Protocol):
    """The settings a decision reads (shared.settings.Settings has them)."""

    @property
    def on_ambiguous(self) -> str: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def backoff_base_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...
    @property
    def retry_after_max_s(self) -> float: ...
    @property
    def max_age_s(self) -> float: ...
    @property
    def lookup_settle_s(self) -> float: ...


@dataclass(frozen=True)
class Attempt:
    """What the decision needs to know about the attempt that failed."""

    number: int  # this attempt's number (1-based; the row's attempts after the claim)
    previous_state: str | None  # the row's state before this attempt claimed it
    after_ambiguous: bool = False  # an earlier attempt may have delivered
    lookup: bool | None = None  # what the Sent Items lookup said (None: none, or it could not know)
    now_mode: bool = False  # POST /api/send?mode=now: answered, not requeued
    age_s: float = 0.0  # since the message was first seen
    throttled: int = 0  # throttled tries before this one (they counted no attempt)


@dataclass(frozen=True)
class Decision:
    action: Action
    error: OutboxError  # the error as it is recorded (retryable False once the catalog's retries are spent)
    state: State  # the row's state afterwards
    delay_s: float | None = None  # when the next attempt is due (retry and defer)
    attempts: int | None = None  # the row's attempt count to store when it differs from the attempt's
    ambiguous: bool = False  # this attempt may have delivered
    exhausted: bool = False  # poisoned because retries ran out, not because the error is permanent
    throttled: int | None = None  # the row's count of throttled tries, when this attempt was one

    @property
    def kind(self) -> Kind:
        """The outcome the invocation reports."""
        if self.action is Action.DEFER:
            return Kind.DEFERRED
        if self.action is Action.POISON:
            return Kind.POISONED
        return Kind.RETRY


# Answers that say "the mailbox is busy" (429, 503): right after an ambiguous attempt they may mean that the
# earlier send is still being worked on (after a 504 the backend can hold the mailbox's concurrency slot and
# deliver later: fidelity-gaps.md, "four 504s, a 429, and the mail received four times").
BUSY_STATUSES = frozenset({429, 503})


def waiting_state(attempt: Attempt, err: OutboxError | None = None) -> State:
    """The row's state while the message waits: a lookup that found nothing settled the doubt about an
    earlier attempt, unless Microsoft then said the mailbox is busy (the earlier send may still be at
    work, and a miss before it finished proves nothing); an unanswered (or impossible) lookup keeps the
    row ambiguous, so the next attempt looks again before sending."""
    if not attempt.after_ambiguous:
        return State.RETRYING
    if attempt.lookup is not False:
        return State.AMBIGUOUS
    busy = err is not None and err.code not in PAUSED_CODES and (
        err.status in BUSY_STATUSES or err.category == "throttled")
    return State.AMBIGUOUS if busy else State.RETRYING


def decide(err: OutboxError, attempt: Attempt, rules: RetryRules, *, rng: random.Random) -> Decision:
    """Poison, retry (after which delay), or defer without counting the attempt."""
    if err.category == "throttled" and not err.maybe_delivered:
        return _throttled(err, attempt, rules, rng)

    if err.maybe_delivered:
        if (rules.on_ambiguous == "poison" and not attempt.now_mode) or attempt.number >= rules.max_attempts:
            return Decision(Action.POISON, err, State.POISONED, ambiguous=True)
        delay = _delay(err, attempt, rules, rng)
        if rules.on_ambiguous == "lookup":
            # Sent Items is not instant: Graph answers before transport, and the copy appears later. A
            # lookup before it settles would miss and resend a delivered message.
            delay = max(delay, rules.lookup_settle_s)
        return Decision(Action.RETRY, err, State.AMBIGUOUS, delay_s=delay, ambiguous=True)

    if not err.retryable or err.category == "invalid_message":
        return Decision(Action.POISON, err, State.POISONED)

    if err.max_retries is not None:
        # The transports already spend a "refresh credentials" retry in-process (a fresh token after
        # 535 5.7.3 or a 401, a re-read certificate after AADSTS700027), so that one is not repeated.
        catalog_limit = max(1, 1 + err.max_retries - (1 if err.refresh_credentials else 0))
        if attempt.number >= catalog_limit:
            # A requeue unchanged cannot succeed, and the envelope must not tell an operator's tool it can.
            return Decision(Action.POISON, err.replace(retryable=False), State.POISONED, exhausted=True)
    if attempt.number >= rules.max_attempts:
        return Decision(Action.POISON, err, State.POISONED, exhausted=True)
    return Decision(Action.RETRY, err, waiting_state(attempt, err), delay_s=_delay(err, attempt, rules, rng))


def _throttled(err: OutboxError, attempt: Attempt, rules: RetryRules, rng: random.Random) -> Decision:
    """Throttling is never the message's fault (a 429 from Graph, 432 4.3.2 from Exchange, our own paused
    or busy mailbox): it spends no attempt, so a storm longer than OUTBOX_MAX_ATTEMPTS still delivers.
    Only age ends it: past OUTBOX_MAX_AGE_S the message is poisoned throttled, with its count of tries."""
    tries = attempt.throttled + 1
    if attempt.age_s >= rules.max_age_s:
        history = (f"throttled {tries} times over {attempt.age_s:.0f} s since first seen, longer than "
                   f"OUTBOX_MAX_AGE_S ({rules.max_age_s:.0f} s); last: {err.detail or err.code}")
        return Decision(Action.POISON, err.replace(retryable=False, detail=history), State.POISONED,
                        attempts=max(0, attempt.number - 1), exhausted=True, throttled=tries)
    state = waiting_state(attempt, err)
    if err.code in PAUSED_CODES:
        if state is State.RETRYING and attempt.previous_state in (None, State.QUEUED):
            state = State.QUEUED  # our own pacing held it back: it never reached Microsoft
        # Its wait is exact (when the mailbox's slot or budget unit frees).
        delay = max(1.0, float(err.retry_after or 1.0))
    else:
        delay = retry_delay_s(tries, retry_after=err.retry_after, base_s=rules.backoff_base_s,
                              max_s=rules.backoff_max_s, retry_after_max_s=rules.retry_after_max_s, rng=rng)
    return Decision(Action.DEFER, err, state, delay_s=delay, attempts=max(0, attempt.number - 1), throttled=tries)


def _delay(err: OutboxError, attempt: Attempt, rules: RetryRules, rng: random.Random) -> float:
    return retry_delay_s(attempt.number, retry_after=err.retry_after, base_s=rules.backoff_base_s,
                         max_s=rules.backoff_max_s, retry_after_max_s=rules.retry_after_max_s, rng=rng)
