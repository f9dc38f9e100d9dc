"""Mailbox slots shared through blob leases (shared/storage/slots.py) against Azurite: what several
instances see, a holder that dies, and a store that stops answering."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.azurite import Azurite
from shared.storage.slots import BlobSlots
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
MAILBOX = "Sender@Contoso.example"


def _container(connection_string: str, name: str, *, timeout: float = 2.0) -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        connection_string, connection_timeout=timeout, read_timeout=timeout, retry_total=0)
    return service.get_container_client(name)


@pytest.fixture
def make_slots(azurite: Azurite) -> Iterator[Callable[..., BlobSlots]]:
    """Slot stores over one fresh container, as separate instances would build them."""
    name = f"slots-{uuid.uuid4().hex[:12]}"
    made: list[BlobSlots] = []

    def factory(connection_string: str | None = None, **overrides: Any) -> BlobSlots:
        options: dict[str, Any] = {"service": "graph", "capacity": 4, "scope": "app-1", "lease_s": 15,
                                   "idle_s": 0.3, "probe_s": 0.05, "safe_share": 2, **overrides}
        slots = BlobSlots(_container(connection_string or azurite.connection_string, name), **options)
        made.append(slots)
        return slots

    yield factory
    for slots in made:
        slots.close()


def test_one_instance_gets_all_four_slots_and_no_fifth(make_slots: Callable[..., BlobSlots]) -> None:
    slots = make_slots()
    assert all(slots.take(MAILBOX, 1.0) for _ in range(4))
    assert slots.take(MAILBOX, 0.2) is False  # Outlook's 4th is the last
    slots.give_back(MAILBOX)
    assert slots.take(MAILBOX.lower(), 0.0) is True  # the held lease serves again, the address case aside
    ops = slots.operations()
    # One listing and one acquire per slot (plus the blobs created once); reuse costs nothing.
    assert ops["acquire"] == 4 and ops.get("acquire_taken", 0) == 0, ops


def test_instances_share_four_slots_and_an_idle_one_moves_to_who_needs_it(
        make_slots: Callable[..., BlobSlots]) -> None:
    a, b = make_slots(), make_slots()
    assert all(a.take(MAILBOX, 1.0) for _ in range(3))
    assert b.take(MAILBOX, 1.0) is True
    assert b.take(MAILBOX, 0.3) is False and a.take(MAILBOX, 0.3) is False  # 4 in all, wherever held
    a.give_back(MAILBOX)
    started = time.monotonic()
    assert b.take(MAILBOX, 5.0) is True  # a gives the idle lease back after OUTBOX_SLOT_IDLE_S
    assert time.monotonic() - started < 3.0
    assert a.held(MAILBOX) == 2 and b.held(MAILBOX) == 2


def test_threads_of_two_instances_never_hold_more_than_four(make_slots: Callable[..., BlobSlots]) -> None:
    instances = [make_slots(), make_slots()]
    lock = threading.Lock()
    in_flight, peak, done = [0], [0], [0]

    def worker(slots: BlobSlots) -> None:
        for _ in range(15):
            if not slots.take(MAILBOX, 10.0):
                continue
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.01)  # a request in flight
            with lock:
                in_flight[0] -= 1
                done[0] += 1
            slots.give_back(MAILBOX)

    threads = [threading.Thread(target=worker, args=(s,)) for s in instances for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 4 and done[0] == 120


_HOLDER = textwrap.dedent("""
    import sys
    from azure.storage.blob import BlobServiceClient
    from shared.storage.slots import BlobSlots

    container = BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client(sys.argv[2])
    slots = BlobSlots(container, service="graph", capacity=4, scope="app-1", lease_s=15, idle_s=60,
                      probe_s=0.05, safe_share=2)
    assert all(slots.take(sys.argv[3], 5.0) for _ in range(4))
    print("held", flush=True)
    sys.stdin.read()  # until killed
""")


@pytest.mark.timeout(90)
def test_a_killed_holder_loses_its_slots_within_the_lease_period(azurite: Azurite) -> None:
    name = f"slots-{uuid.uuid4().hex[:12]}"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, azurite.connection_string, name, MAILBOX], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        survivor = BlobSlots(_container(azurite.connection_string, name), service="graph", capacity=4, scope="app-1",
                             lease_s=15, idle_s=1, probe_s=0.2, safe_share=2)
        try:
            assert survivor.take(MAILBOX, 0.5) is False  # all four are leased by the live holder
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)
            killed = time.monotonic()
            assert all(survivor.take(MAILBOX, 25.0) for _ in range(4))
            # The server frees an unrenewed lease after its period: at most 15 s (+ a probe and a margin).
            assert time.monotonic() - killed <= 15 + 2.0
        finally:
            survivor.close()
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait(10)


@pytest.mark.timeout(90)
def test_a_stalled_store_falls_back_to_the_safe_share_says_so_once_and_recovers(
        make_slots: Callable[..., BlobSlots], stallable: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="outbox.slots")
    slots = make_slots(stallable.connection_string, idle_s=60)
    assert slots.take(MAILBOX, 1.0) is True
    slots.give_back(MAILBOX)
    assert stallable.pid is not None
    os.killpg(stallable.pid, signal.SIGSTOP)
    try:
        # The held lease is used without a storage call; the next slot needs the store, which is silent.
        assert slots.take(MAILBOX, 5.0) is True
        assert slots.take(MAILBOX, 5.0) is True  # the safe share: floor(4 / expected 2) = 2
        assert slots.degraded
        assert slots.take(MAILBOX, 0.2) is False  # and no more
        slots.give_back(MAILBOX)
        assert slots.take(MAILBOX, 0.2) is True  # sending goes on at that share
        degraded = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(degraded) == 1 and "safe share of 2 of 4" in degraded[0].getMessage()
    finally:
        os.killpg(stallable.pid, signal.SIGCONT)
    # The keeper tries the store a third of a lease period later and finds it back.
    wait_until(lambda: not slots.degraded, 20, message=lambda: f"still degraded; {slots.operations()}")
    assert [r for r in caplog.records if "answers again" in r.getMessage()]
    slots.give_back(MAILBOX)
    slots.give_back(MAILBOX)
    assert all(slots.take(MAILBOX, 5.0) for _ in range(4))  # the whole mailbox again, through leases
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


class _Clock:
    """The slot store's clock, moved by the test: idle times pass without waiting for them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_alone_on_a_mailbox_a_spare_slot_is_kept_while_sending_and_all_go_back_once_quiet(
        make_slots: Callable[..., BlobSlots]) -> None:
    clock = _Clock()
    slots = make_slots(idle_s=0.3, idle_alone_s=60, clock=clock)
    assert slots.take(MAILBOX, 1.0) and slots.take(MAILBOX, 1.0)
    slots.give_back(MAILBOX)  # one still in flight: the mailbox is in use
    clock.now += 1.0  # past OUTBOX_SLOT_IDLE_S, well short of OUTBOX_SLOT_IDLE_ALONE_S
    slots._keep_once()
    assert slots.held(MAILBOX) == 2 and "release" not in slots.operations()
    slots.give_back(MAILBOX)  # nothing in flight now: other instances may be waiting
    clock.now += 1.0
    slots._keep_once()
    assert slots.held(MAILBOX) == 0 and slots.operations()["release"] == 2
    listings = slots.operations()["list"]
    assert slots.take(MAILBOX, 1.0) is True
    ops = slots.operations()
    # A slot it gave up is acquired again directly: one operation, no listing.
    assert ops["list"] == listings and ops["acquire"] == 3, ops


def test_a_spare_slot_goes_back_soon_once_another_holder_is_seen(make_slots: Callable[..., BlobSlots]) -> None:
    clock = _Clock()
    other = make_slots()
    assert other.take(MAILBOX, 1.0) is True
    slots = make_slots(idle_s=0.3, idle_alone_s=60, clock=clock)
    assert slots.take(MAILBOX, 1.0) and slots.take(MAILBOX, 1.0)  # its listings show the other's lease
    slots.give_back(MAILBOX)
    clock.now += 1.0
    slots._keep_once()
    assert slots.held(MAILBOX) == 1 and slots.operations()["release"] == 1


def test_holding_every_slot_a_spare_goes_back_soon_even_alone(make_slots: Callable[..., BlobSlots]) -> None:
    # Another instance waiting for this mailbox gets no slot to show up on, so "alone" proves nothing.
    clock = _Clock()
    slots = make_slots(idle_s=0.3, idle_alone_s=60, clock=clock)
    assert all(slots.take(MAILBOX, 1.0) for _ in range(4))
    slots.give_back(MAILBOX)  # three still in flight
    clock.now += 1.0
    slots._keep_once()
    assert slots.held(MAILBOX) == 3 and slots.operations()["release"] == 1
    slots.give_back(MAILBOX)  # a spare again, now with a slot free for others: kept while sending
    clock.now += 1.0
    slots._keep_once()
    assert slots.held(MAILBOX) == 3 and slots.operations()["release"] == 1


def _sending(slots: BlobSlots, threads: int, stop: threading.Event) -> list[threading.Thread]:
    """``threads`` workers sending to MAILBOX through ``slots`` until ``stop``: a backlog that never ends."""

    def work() -> None:
        while not stop.is_set():
            if slots.take(MAILBOX, 0.5):
                time.sleep(0.02)  # a request in flight
                slots.give_back(MAILBOX)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers


def test_an_instance_that_arrives_while_another_holds_every_slot_gets_a_fair_share_while_it_still_sends(
        make_slots: Callable[..., BlobSlots]) -> None:
    # Sticky leases alone leave a latecomer waiting until the holder runs out of mail; its want lease
    # makes the holder give back down to ceil(4 / 2) while it keeps sending.
    a, b = make_slots(idle_alone_s=60), make_slots(idle_alone_s=60)
    stop = threading.Event()
    workers = _sending(a, 6, stop)
    try:
        wait_until(lambda: a.held(MAILBOX) == 4, 10, message="a never held all four")
        late = _sending(b, 6, stop)
        workers += late
        wait_until(lambda: a.held(MAILBOX) == 2 and b.held(MAILBOX) == 2, 10,
                   message=lambda: f"a holds {a.held(MAILBOX)}, b {b.held(MAILBOX)}")
    finally:
        stop.set()
        for w in workers:
            w.join()


def test_a_want_left_by_a_crashed_instance_costs_a_probe_period_not_a_slot(
        make_slots: Callable[..., BlobSlots]) -> None:
    from azure.storage.blob import BlobLeaseClient

    slots = make_slots(idle_alone_s=60)
    assert slots.take(MAILBOX, 1.0) is True  # the slot blobs exist now
    slots.give_back(MAILBOX)
    # An instance said it waits, then died: its want lease runs on for the lease period.
    ghost = slots._container.get_blob_client(f"{slots._box(MAILBOX.lower()).prefix}want-0")
    ghost.upload_blob(b"", overwrite=True)
    BlobLeaseClient(ghost).acquire(lease_duration=15)
    started = time.monotonic()
    assert all(slots.take(MAILBOX, 5.0) for _ in range(4))  # above the share of 2: free slots are ours anyway
    assert time.monotonic() - started < 3.0


def test_an_instance_done_with_a_mailbox_drops_its_want_with_its_last_request(
        make_slots: Callable[..., BlobSlots]) -> None:
    # A want left standing holds the others to a smaller share: at the end of a backlog the last instance
    # would leave the slots freed by the others alone for a probe period.
    a, b = make_slots(idle_s=30, idle_alone_s=60), make_slots(idle_s=30, idle_alone_s=60)
    assert all(a.take(MAILBOX, 1.0) for _ in range(3)) and b.take(MAILBOX, 1.0)
    prefix = b._box(MAILBOX.lower()).prefix

    def wants() -> int:
        return sum(1 for blob in b._container.list_blobs(name_starts_with=f"{prefix}want-")
                   if blob.lease.state == "leased")

    assert b.take(MAILBOX, 0.3) is False  # all four in use: b says it waits
    assert wants() == 1
    b.give_back(MAILBOX)  # its last request ends and none of its threads waits
    assert wants() == 0  # at once, not OUTBOX_SLOT_IDLE_S (30 s here) later


def test_a_given_up_slot_taken_by_another_instance_costs_one_refused_acquire(
        make_slots: Callable[..., BlobSlots]) -> None:
    clock = _Clock()
    slots = make_slots(capacity=1, idle_s=0.3, idle_alone_s=60, clock=clock)
    other = make_slots(capacity=1, idle_s=60)
    assert slots.take(MAILBOX, 1.0) is True
    slots.give_back(MAILBOX)
    clock.now += 1.0
    slots._keep_once()
    assert slots.held(MAILBOX) == 0
    assert other.take(MAILBOX, 1.0) is True  # the only slot is someone else's now
    before = slots.operations()
    assert slots.take(MAILBOX, 0.2) is False
    after = slots.operations()
    assert after.get("acquire_taken", 0) == before.get("acquire_taken", 0) + 1, after
    assert after["list"] > before["list"]  # it looked, found nothing free, and waits
