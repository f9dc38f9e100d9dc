"""The Graph request budget of each app + mailbox (10,000 per 10 minutes), shared by every instance through
one blob per mailbox (``OUTBOX_SLOTS=blob``).

The blob ``budget/<client id>/<sha256(mailbox)[:32]>`` in ``OUTBOX_SLOTS_CONTAINER`` holds, in its metadata,
how many requests were granted in each of the last buckets of 1/40 of the window (``b<bucket number>`` =
count, bucket number = wall-clock seconds // bucket length). A process takes requests from it in small
blocks (read the blob, write it back only if its ETag did not change, i.e. no other instance wrote in
between), keeps the block for the bucket it was granted in, and drops what it did not use when the bucket
ends: a request is counted when it is granted, and sent within the same bucket, so the count never lags
Graph's own. The sum covers 42 buckets: the whole window whatever the bucket boundaries fall on, and one
bucket for the time between a grant and the request reaching Graph; that costs ~2/42 of the budget rate.

Storage operations: two per block (a read and a conditional write, more when instances collide); a block
is max(cost, budget / 400) requests (25 of 10,000), so ~0.1 per request at Graph's budget. A store that
fails or is slow falls back, as the slots do, to a fixed share of the budget per process:
floor(budget / ``OUTBOX_EXPECTED_INSTANCES``), counted in process, until it answers again. A store that
stalls for a moment must not add a whole share on top of a window the instances already filled, and the
grants made without it must count once it is back, so the share is also held to what the last answer
left free, and those grants are written into the blob with the next write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("outbox.slots")

BUCKETS_PER_WINDOW = 40
# The window, whatever its start falls on (+1), and one more for the time between a grant and the
# request's arrival at Graph, which counts it then (+1).
COUNTED_BUCKETS = BUCKETS_PER_WINDOW + 2
MAX_CONFLICTS = 8  # conditional writes lost to other instances in a row before giving up for now


def _counted(counts: dict[int, int], bucket: int) -> dict[int, int]:
    """The buckets of ``counts`` that still count against the budget in ``bucket``."""
    return {b: n for b, n in counts.items() if b > bucket - COUNTED_BUCKETS}


@dataclass(eq=False)
class _Pool:
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    tokens: int = 0
    bucket: int = -1  # the bucket the tokens were granted in
    exists: bool = False
    seen: dict[int, int] = field(default_factory=dict)  # bucket counts as the store last told them
    local: deque[float] = field(default_factory=deque)  # grants made while the store failed (times)
    owed: Counter[int] = field(default_factory=Counter)  # those grants by bucket, not yet in the blob


class BlobBudget:
    """``limit`` requests per ``window_s`` per mailbox, shared through blob metadata; ``take`` returns 0.0 when
    ``cost`` requests may go now, else the seconds until the shared window frees enough."""

    def __init__(self, container: Any, *, scope: str, limit: int, window_s: float, safe_share: int,
                 retry_s: float, wall: Callable[[], float] = time.time) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self._container = container
        self.scope = scope or "app"
        self.limit = limit
        self.window_s = window_s
        self.bucket_s = window_s / BUCKETS_PER_WINDOW
        self.block = max(1, limit // 400)
        self.safe_share = max(1, min(limit, safe_share))
        self.retry_s = retry_s
        self._wall = wall
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self._degraded_until: float | None = None
        self._retrying = False
        self.ops: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._ops_lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        return self._degraded_until is not None

    def operations(self) -> dict[str, int]:
        with self._ops_lock:
            return dict(self.ops)

    def take(self, mailbox: str, cost: int = 1) -> float:
        if cost > self.limit:
            raise ValueError(f"cost {cost} exceeds the whole budget {self.limit}")
        key = mailbox.strip().lower()
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
                pool = self._pools[key] = _Pool(f"budget/{self.scope}/{digest}")
        with pool.lock:  # one refill per mailbox at a time; other mailboxes do not wait
            now = self._wall()
            if self._degraded_until is not None:
                if now < self._degraded_until:
                    return self._take_local(pool, cost, now)
                self._degraded_until = None  # time to try the store again
                self._retrying = True
            bucket = int(now // self.bucket_s)
            if pool.bucket != bucket:
                pool.tokens, pool.bucket = 0, bucket  # unused grants of an older bucket are dropped
            if pool.tokens >= cost:
                pool.tokens -= cost
                return 0.0
            try:
                granted, wait = self._reserve(pool, bucket, max(cost - pool.tokens, self.block), cost - pool.tokens, now)
            except Exception as exc:
                return self._degrade(exc, pool, cost, now)
            if self._retrying:
                self._retrying = False
                log.warning("budget store answers again: mailbox budgets are shared with the other instances again",
                            extra={"custom_dimensions": {"event": "slots.recovered", "service": "graph-budget"}})
            pool.tokens += granted
            if pool.tokens >= cost:
                pool.tokens -= cost
                return 0.0
            return wait

    # -- the store ------------------------------------------------------------------------------

    def _reserve(self, pool: _Pool, bucket: int, want: int, need: int, now: float) -> tuple[int, float]:
        """Grant up to ``want`` (at least ``need``, or nothing) in ``bucket``; returns (granted, wait)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

        blob = self._container.get_blob_client(pool.name)
        for _ in range(MAX_CONFLICTS):
            try:
                self._count("read")
                props = blob.get_blob_properties()
            except ResourceNotFoundError:
                self._create(blob)
                continue
            counts = {int(k[1:]): int(v) for k, v in (props.metadata or {}).items()
                      if k.startswith("b") and k[1:].isdigit() and v.isdigit()}
            counted = _counted(counts, bucket)
            owed = _counted(pool.owed, bucket)
            for b, n in owed.items():
                counted[b] = counted.get(b, 0) + n
            pool.seen = dict(counted)
            room = self.limit - sum(counted.values())
            grant = min(want, room) if room >= need else 0
            wait = 0.0 if grant else self._wait(counted, bucket, need - max(0, room), now)
            if not grant and not owed:
                return 0, wait
            if grant:
                counted[bucket] = counted.get(bucket, 0) + grant
            try:
                self._count("write")
                blob.set_blob_metadata({f"b{b}": str(n) for b, n in counted.items()}, etag=props.etag,
                                       match_condition=MatchConditions.IfNotModified)
                pool.owed.clear()
                pool.seen = counted
                return grant, wait
            except ResourceExistsError:
                self._count("conflict")
            except HttpResponseError as exc:
                if exc.status_code != 412:
                    raise
                self._count("conflict")  # another instance wrote first: read again
        return 0, self.bucket_s  # crowded: try again shortly

    def _wait(self, counted: dict[int, int], bucket: int, missing: int, now: float) -> float:
        """Seconds until ``missing`` more units leave the counted buckets (oldest first)."""
        freed = 0
        for b in sorted(counted):
            freed += counted[b]
            if freed >= missing:
                return max(self.bucket_s / 10, (b + COUNTED_BUCKETS) * self.bucket_s - now)
        return self.window_s

    def _create(self, blob: Any) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        self._count("create")
        try:
            blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except ResourceNotFoundError:  # no container yet
            self._count("create")
            with contextlib.suppress(ResourceExistsError):
                self._container.create_container()

    # -- when the store fails ----------------------------------------------------------------------

    def _degrade(self, exc: Exception, pool: _Pool, cost: int, now: float) -> float:
        first = self._degraded_until is None and not self._retrying
        self._retrying = False
        self._degraded_until = now + self.retry_s
        if first:
            reason = f"{type(exc).__name__} {getattr(exc, 'status_code', '') or ''}".strip()
            self.failures[reason] += 1
            log.warning("budget store unavailable (%s): each mailbox gets %d of %d requests per %g s in this "
                        "process (OUTBOX_EXPECTED_INSTANCES) until it answers again", reason, self.safe_share,
                        self.limit, self.window_s,
                        extra={"custom_dimensions": {"event": "slots.degraded", "service": "graph-budget"}})
        return self._take_local(pool, cost, now)

    def _take_local(self, pool: _Pool, cost: int, now: float) -> float:
        """The safe share, and no more than the store's last answer left free in the counted window."""
        grants = pool.local
        while grants and grants[0] <= now - self.window_s:
            grants.popleft()
        waits = []
        over = len(grants) + cost - self.safe_share
        if over > 0:
            waits.append(max(0.01, grants[over - 1] + self.window_s - now) if over <= len(grants) else self.window_s)
        bucket = int(now // self.bucket_s)
        # The last answer, with this process's grants since then added: others' grants since are unknown.
        counted = _counted(pool.seen, bucket)
        room = self.limit - sum(counted.values())
        if room < cost:
            waits.append(self._wait(counted, bucket, cost - max(0, room), now))
        if waits:
            return max(waits)
        grants.extend([now] * cost)
        pool.owed[bucket] += cost
        pool.seen[bucket] = pool.seen.get(bucket, 0) + cost
        return 0.0

    def _count(self, kind: str) -> None:
        with self._ops_lock:
            self.ops[kind] += 1

