"""The Graph request budget shared through blob metadata (shared/storage/budget.py) against Azurite: two
instances together never pass the budget in any window, and a store that does not answer leaves each a
fixed share."""

from __future__ import annotations

import bisect
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest

from harness.azurite import Azurite, free_port
from shared.storage.budget import BlobBudget

MAILBOX = "sender@contoso.example"


def _container(connection_string: str, name: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string, connection_timeout=2, read_timeout=2,
                                                       retry_total=0)
    return service.get_container_client(name)


def test_two_instances_share_one_budget_in_every_window(azurite: Azurite) -> None:
    name = f"budget-{uuid.uuid4().hex[:12]}"
    instances = [BlobBudget(_container(azurite.connection_string, name), scope="app-1", limit=10, window_s=4.0,
                            safe_share=5, retry_s=5) for _ in range(2)]
    granted: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 9.0

    def worker(budget: BlobBudget) -> None:
        while time.monotonic() < stop:
            wait = budget.take(MAILBOX)
            if wait > 0:
                time.sleep(min(wait, 0.05))  # a sender that keeps asking (re-queued messages coming back)
                continue
            with lock:
                granted.append(time.time())

    threads = [threading.Thread(target=worker, args=(b,)) for b in instances for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    granted.sort()
    busiest = max(bisect.bisect_left(granted, t + 4.0) - i for i, t in enumerate(granted))
    assert busiest <= 10, busiest  # never more than the budget in any 4 s, across both instances
    assert len(granted) >= 20, len(granted)  # and most of it used: 10 per 4 s over 9 s
    assert not any(b.degraded for b in instances)


def test_a_full_budget_says_how_long_to_wait(azurite: Azurite) -> None:
    budget = BlobBudget(_container(azurite.connection_string, f"budget-{uuid.uuid4().hex[:12]}"), scope="app-1",
                        limit=3, window_s=4.0, safe_share=1, retry_s=5)
    assert [budget.take(MAILBOX) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = budget.take(MAILBOX)
    assert 3.5 < wait <= 4.3  # the first grant leaves the counted buckets (a window and a bucket or two) later


def test_a_store_that_does_not_answer_leaves_the_safe_share() -> None:
    dead = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" \
           f"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" \
           f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    budget = BlobBudget(_container(dead, "budget"), scope="app-1", limit=100, window_s=60.0, safe_share=2,
                        retry_s=60)
    assert [budget.take(MAILBOX) for _ in range(2)] == [0.0, 0.0]  # floor(100 / expected instances) = 2 here
    assert budget.degraded and sum(budget.failures.values()) == 1
    assert budget.take(MAILBOX) > 50  # and no more until this process's own window frees


class _Wall:
    """The budget's wall clock, moved by the test: the retry time passes without waiting for it."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.timeout(60)
def test_a_stall_adds_no_share_to_a_full_window_and_its_grants_count_once_the_store_is_back(
        stallable: Azurite) -> None:
    name = f"budget-{uuid.uuid4().hex[:12]}"
    wall = _Wall()
    first, other = (BlobBudget(_container(stallable.connection_string, name), scope="app-1", limit=10,
                               window_s=60.0, safe_share=5, retry_s=5, wall=wall) for _ in range(2))
    assert [first.take(MAILBOX) for _ in range(8)] == [0.0] * 8
    assert stallable.pid is not None
    os.killpg(stallable.pid, signal.SIGSTOP)
    try:
        # The safe share would be 5; the store's last answer left 2 of the window free.
        assert [first.take(MAILBOX) for _ in range(2)] == [0.0, 0.0]
        assert first.degraded
        assert first.take(MAILBOX) > 50  # until the first grants leave the window
    finally:
        os.killpg(stallable.pid, signal.SIGCONT)
    wall.now += 6  # past the retry time: the next take asks the store, and tells it the 2
    assert first.take(MAILBOX) > 40 and not first.degraded
    blob = _container(stallable.connection_string, name).get_blob_client(next(iter(first._pools.values())).name)
    counts = blob.get_blob_properties().metadata
    assert sum(int(n) for n in counts.values()) == 10, counts
    assert other.take(MAILBOX) > 40  # another instance sees the window full
