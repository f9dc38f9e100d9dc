"""Retry delays: Retry-After wins (capped), else exponential backoff with jitter that never hits zero."""

from __future__ import annotations

import random

import pytest

from shared.backoff import QUEUE_MAX_VISIBILITY_S, backoff_s, retry_delay_s, visibility_timeout_s


@pytest.mark.parametrize("attempt, ceiling", [(1, 5), (2, 10), (3, 20), (4, 40), (8, 640), (9, 900), (40, 900)])
def test_backoff_doubles_up_to_the_cap_with_equal_jitter(attempt: int, ceiling: float) -> None:
    rng = random.Random(1)
    draws = [backoff_s(attempt, base_s=5, max_s=900, rng=rng) for _ in range(200)]
    assert min(draws) >= ceiling / 2 and max(draws) <= ceiling
    assert max(draws) - min(draws) > ceiling / 4  # spread, so a burst does not come back together


def test_huge_attempt_numbers_stay_finite() -> None:
    assert backoff_s(10_000, base_s=5, max_s=900) <= 900


def test_retry_after_wins_and_is_capped() -> None:
    assert retry_delay_s(3, retry_after=12, base_s=5, max_s=900, retry_after_max_s=900) == 12
    assert retry_delay_s(3, retry_after=5000, base_s=5, max_s=900, retry_after_max_s=600) == 600
    assert retry_delay_s(1, retry_after=0, base_s=5, max_s=900, retry_after_max_s=600) == 0


def test_without_retry_after_backoff_applies() -> None:
    d = retry_delay_s(2, retry_after=None, base_s=5, max_s=900, retry_after_max_s=600, rng=random.Random(3))
    assert 5 <= d <= 10


def test_visibility_rounds_up_so_retry_after_is_never_undercut() -> None:
    assert visibility_timeout_s(1.01) == 2
    assert visibility_timeout_s(0) == 0
    assert visibility_timeout_s(10**9) == QUEUE_MAX_VISIBILITY_S
