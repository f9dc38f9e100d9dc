"""How long a message waits before its next attempt.

Retry-After from the server wins (capped, so a hostile or buggy header cannot park a message for days);
otherwise exponential backoff with jitter, so that many messages failing together do not come back
together (no retry storms).
"""

from __future__ import annotations

import math
import random

# A queue message can stay invisible for at most 7 days.
QUEUE_MAX_VISIBILITY_S = 7 * 24 * 3600


def backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff for the retry after `attempt` (1-based), with "equal jitter".

    The ceiling is min(max_s, base_s * 2**(attempt-1)); the delay is drawn from [ceiling/2, ceiling], so
    it never collapses to zero (which full jitter allows) and still spreads a burst over half the window.
    """
    if attempt < 1:
        attempt = 1
    # 2**attempt overflows float long after max_s caps it; cap the exponent to stay finite.
    ceiling = min(max_s, base_s * (2.0 ** min(attempt - 1, 60)))
    ceiling = max(0.0, ceiling)
    draw = (rng or random).random()
    return ceiling / 2.0 + draw * ceiling / 2.0


def retry_delay_s(
    attempt: int,
    *,
    retry_after: float | None,
    base_s: float,
    max_s: float,
    retry_after_max_s: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next attempt: the server's Retry-After (capped) when given, else backoff."""
    if retry_after is not None and retry_after >= 0:
        return float(min(retry_after, retry_after_max_s))
    return backoff_s(attempt, base_s=base_s, max_s=max_s, rng=rng)


def visibility_timeout_s(delay_s: float) -> int:
    """The queue's visibility delay in whole seconds, rounded UP so a Retry-After is never undercut."""
    return int(min(QUEUE_MAX_VISIBILITY_S, max(0, math.ceil(delay_s))))
