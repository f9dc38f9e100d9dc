"""Per-mailbox slots shared by every instance, as blob leases in the app's storage account
(``OUTBOX_SLOTS=blob``).

Microsoft counts per app and mailbox across all callers: 4 Graph requests in flight, 3 SMTP connections.
Each slot is one blob, ``<service>/<client id>/<sha256(mailbox)[:32]>/slot-<n>`` in
``OUTBOX_SLOTS_CONTAINER``; whoever holds its lease may use the slot. Leases are sticky: a process keeps
the ones it uses (renewed every third of ``OUTBOX_SLOT_LEASE_S``) and gives one back after it sat idle for
``OUTBOX_SLOT_IDLE_S``, so a busy instance spends no storage operation per message, one active instance
can use all 4 slots, and four share them. A crashed holder stops renewing and Azure Storage frees the
slot at most one lease period later (the server's clock, not ours). A process that wants a slot it does
not hold looks for a free one (one listing shows every lease state, then one acquire) at most every
``OUTBOX_SLOT_PROBE_S``.

Giving a slot back costs three operations if the same process wants it again (release, list, acquire),
and a process sending to many mailboxes wants its 2nd-4th slot back every few hundred milliseconds. So
while a process still sends to a mailbox and has not seen another holder on it in its last lease period
(its listings show every lease), it keeps a spare slot for ``OUTBOX_SLOT_IDLE_ALONE_S`` instead; once
nothing is in flight for ``OUTBOX_SLOT_IDLE_S`` it gives every slot back, since the end of a backlog is
when other instances wait. It takes back a slot it gave up by acquiring that blob directly (one
operation; a 409 means someone else has it, and then it lists). The cost: an instance that arrives while
another sends with spare slots it has not seen waits up to the longer time for one.

When the store fails or answers slower than ``OUTBOX_SLOT_TIMEOUT_S`` (anything but "that lease is
taken"), the process falls back to a fixed safe share, floor(capacity / ``OUTBOX_EXPECTED_INSTANCES``)
(at least 1), on top of the Retry-After pause every 429 already sets; it says so once in the log, tries
the store again every third of a lease period, and says so when it is back. Leases it held then are
forgotten (the server expires them), so nothing waits on a store that does not answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("outbox.slots")

# Lease states a new holder can acquire (Lease Blob: "expired" and "broken" leases are free).
FREE_STATES = frozenset({"available", "expired", "broken"})
MIN_LEASE_S, MAX_LEASE_S = 15, 60  # what Lease Blob accepts besides infinite


class SlotStoreError(Exception):
    """The slot store did not answer as a store should (down, slow, refused): degrade, do not fail sends."""


@dataclass(eq=False)
class _Held:
    index: int
    lease: Any  # azure.storage.blob.BlobLeaseClient
    renewed_at: float
    idle_since: float


@dataclass(eq=False)
class _Box:
    cond: threading.Condition
    prefix: str
    # A stack: held[:busy] are in use, held[busy:] idle, the last idle longest (given back first).
    held: list[_Held] = field(default_factory=list)
    busy: int = 0
    unbacked: int = 0  # holds handed out at the safe share while the store failed (no lease behind them)
    orphans: list[_Held] = field(default_factory=list)  # leases dropped when the store failed: released once back
    probing: bool = False
    next_probe: float = 0.0
    blobs_exist: bool = False
    given_up: list[int] = field(default_factory=list)  # slot indices this process released, newest last
    releasing: set[int] = field(default_factory=set)  # still ours at the server until the release answers
    shared_until: float = 0.0  # a listing showed another holder: short idle time until then


class BlobSlots:
    """``shared.ports.SlotPort`` over blob leases: ``capacity`` slots per mailbox for one service."""

    def __init__(
        self,
        container: Any,
        *,
        service: str,
        capacity: int,
        scope: str,
        lease_s: float,
        idle_s: float,
        probe_s: float,
        safe_share: int,
        idle_alone_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
            raise ValueError(f"a blob lease lasts {MIN_LEASE_S}-{MAX_LEASE_S} s, not {lease_s:g}")
        self._container = container
        self.service = service
        self.capacity = capacity
        self.scope = scope or "app"
        self.lease_s = int(lease_s)
        self.renew_s = self.lease_s / 3  # two renewals may fail before the lease is lost
        self.idle_s = idle_s
        self.idle_alone_s = max(idle_s, idle_s if idle_alone_s is None else idle_alone_s)
        self.probe_s = probe_s
        self.safe_share = max(1, min(capacity, safe_share))
        self._clock = clock
        self._lock = threading.Lock()
        self._boxes: dict[str, _Box] = {}
        self._degraded_until: float | None = None  # None: the store answers
        self.failures: Counter[str] = Counter()  # why the store was given up on, by error (benchmarks print it)
        self.ops: Counter[str] = Counter()  # storage operations by kind (benchmarks print them)
        self._ops_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container_checked = False

    # -- SlotPort -------------------------------------------------------------------------------

    def take(self, mailbox: str, wait_s: float) -> bool:
        key = mailbox.strip().lower()
        deadline = time.monotonic() + wait_s
        with self._lock:
            box = self._box(key)
            self._start()
            while True:
                now = self._clock()
                if box.busy + box.unbacked < self.capacity:
                    if self._degraded_until is not None:
                        # The keeper finds out when the store is back; sends never wait on a dead store.
                        if box.busy + box.unbacked < self.safe_share:
                            box.unbacked += 1
                            return True
                    elif box.busy < len(box.held):
                        box.busy += 1  # a lease we hold already: no storage operation
                        return True
                    elif not box.probing and len(box.held) < self.capacity and now >= box.next_probe:
                        if self._probe(box):
                            box.busy += 1
                            return True
                        continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                timeout = remaining
                if not box.probing and self._degraded_until is None and len(box.held) < self.capacity:
                    timeout = min(timeout, max(0.01, box.next_probe - now))
                box.cond.wait(timeout)

    def give_back(self, mailbox: str) -> None:
        with self._lock:
            box = self._boxes.get(mailbox.strip().lower())
            if box is None:
                return
            if box.unbacked > 0:
                box.unbacked -= 1
            elif box.busy > 0:
                box.busy -= 1
                if box.busy < len(box.held):
                    box.held[box.busy].idle_since = self._clock()
            box.cond.notify()

    def close(self) -> None:
        """Stop renewing and release every lease held, so other instances need not wait for expiry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            held = [h for box in self._boxes.values() for h in box.held]
            for box in self._boxes.values():
                box.held.clear()
                box.busy = 0
        if self._degraded_until is None:
            for h in held:
                self._release(h)

    # -- what a test or a benchmark reads ---------------------------------------------------------

    def held(self, mailbox: str) -> int:
        with self._lock:
            box = self._boxes.get(mailbox.strip().lower())
            return len(box.held) if box else 0

    @property
    def degraded(self) -> bool:
        return self._degraded_until is not None

    def operations(self) -> dict[str, int]:
        with self._ops_lock:
            return dict(self.ops)

    # -- internals (called with self._lock held unless said otherwise) -----------------------------

    def _box(self, key: str) -> _Box:
        box = self._boxes.get(key)
        if box is None:
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
            box = self._boxes[key] = _Box(threading.Condition(self._lock), f"{self.service}/{self.scope}/{digest}/")
        return box

    def _probe(self, box: _Box) -> bool:
        """Look for a free slot and lease it (the lock is released meanwhile); True when one is held."""
        box.probing = True
        taken = {h.index for h in box.held} | box.releasing
        self._lock.release()
        try:
            try:
                found, shared = self._acquire_free(box, taken)
                error: SlotStoreError | None = None
            except SlotStoreError as exc:
                found, shared, error = None, False, exc
        finally:
            self._lock.acquire()
            box.probing = False
            box.cond.notify_all()
        now = self._clock()
        if error is not None:
            self._degrade(error, now)
            return False
        self._recovered()
        if shared:
            box.shared_until = now + self.lease_s
        if found is None:
            box.next_probe = now + self.probe_s
            return False
        index, lease = found
        box.held.insert(box.busy, _Held(index, lease, now, now))
        return True

    def _acquire_free(self, box: _Box, taken: set[int]) -> tuple[tuple[int, Any] | None, bool]:
        """Without the lock: a slot this process gave up tried first, else one listing, the slot blobs created
        once, one acquire per free slot tried. Also says whether another holder was seen."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.storage.blob import BlobLeaseClient

        try:
            again = self._take_back(box, taken)
            if again is not None:
                return again, False
            states = self._lease_states(box.prefix)
            shared = any(i not in taken and state not in FREE_STATES for i, state in states.items())
            if not box.blobs_exist:
                for index in range(self.capacity):
                    if index not in states:
                        self._create_blob(f"{box.prefix}slot-{index}")
                        states[index] = "available"
                box.blobs_exist = True
            free = [i for i in range(self.capacity) if i not in taken and states.get(i) in FREE_STATES]
            random.shuffle(free)  # instances probing together should not all want slot 0
            for index in free:
                lease = BlobLeaseClient(self._container.get_blob_client(f"{box.prefix}slot-{index}"))
                try:
                    self._count("acquire")
                    lease.acquire(lease_duration=self.lease_s)
                    return (index, lease), shared
                except ResourceNotFoundError:
                    box.blobs_exist = False  # deleted under us: made again on the next probe
                except HttpResponseError as exc:
                    if exc.status_code != 409:  # 409 LeaseAlreadyPresent: someone was faster
                        raise
                    self._count("acquire_taken")
                    shared = True
            return None, shared
        except SlotStoreError:
            raise
        except Exception as exc:  # down, slow (timeout), refused: all mean "do not rely on the store"
            raise SlotStoreError(_describe(exc)) from exc

    def _take_back(self, box: _Box, taken: set[int]) -> tuple[int, Any] | None:
        """Without the lock: acquire the slot this process gave up last, if nobody else took it (one operation
        instead of a listing and an acquire). Any refusal falls back to the listing."""
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobLeaseClient

        with self._lock:
            candidates = [i for i in box.given_up if i not in taken]
            box.given_up.clear()
        if not candidates or not box.blobs_exist:
            return None
        index = candidates[-1]
        lease = BlobLeaseClient(self._container.get_blob_client(f"{box.prefix}slot-{index}"))
        try:
            self._count("acquire")
            lease.acquire(lease_duration=self.lease_s)
        except HttpResponseError as exc:  # 409 taken, 404 gone, or worse: the listing sorts it out
            self._count("acquire_taken" if exc.status_code == 409 else "acquire_failed")
            return None
        return index, lease

    def _lease_states(self, prefix: str) -> dict[int, str]:
        from azure.core.exceptions import ResourceNotFoundError

        self._count("list")
        try:
            listing = list(self._container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            self._create_container()
            return {}
        states: dict[int, str] = {}
        for blob in listing:
            tail = blob.name[len(prefix):]
            if tail.startswith("slot-") and tail[5:].isdigit():
                states[int(tail[5:])] = str(getattr(blob.lease, "state", None) or "available").lower()
        return states

    def _create_container(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        self._count("create")
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()

    def _create_blob(self, name: str) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        self._count("create")
        try:
            self._container.get_blob_client(name).upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:  # a lease on it already: it exists
                raise

    def _degrade(self, error: SlotStoreError, now: float) -> None:
        first = self._degraded_until is None
        self._degraded_until = now + self.renew_s
        if not first:
            return
        self.failures[str(error)] += 1
        log.warning(
            "slot store for %s unavailable (%s): sending at the safe share of %d of %d per mailbox "
            "(OUTBOX_EXPECTED_INSTANCES) until it answers again", self.service, error, self.safe_share,
            self.capacity, extra={"custom_dimensions": {"event": "slots.degraded", "service": self.service}})
        for box in self._boxes.values():
            # In-flight holds go on without a lease; leases held are left to expire at the server.
            box.unbacked += box.busy
            box.busy = 0
            box.orphans.extend(box.held)
            box.held.clear()
            box.blobs_exist = False
            box.cond.notify_all()

    def _recovered(self) -> None:
        if self._degraded_until is None:
            return
        self._degraded_until = None
        log.warning("slot store for %s answers again: slots are shared with the other instances again",
                    self.service, extra={"custom_dimensions": {"event": "slots.recovered", "service": self.service}})

    def _count(self, kind: str) -> None:
        with self._ops_lock:
            self.ops[kind] += 1

    # -- the keeper: renews held leases and gives back idle ones ----------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._keep, name=f"outbox-slots-{self.service}", daemon=True)
            self._thread.start()

    def _keep(self) -> None:
        tick = max(0.05, min(self.idle_s, self.renew_s) / 2)
        while not self._stop.wait(tick):
            try:
                self._keep_once()
            except Exception:  # the keeper must not die: a dead keeper loses every slot
                log.exception("slot keeper failed; trying again")

    def _keep_once(self) -> None:
        now = self._clock()
        to_release: list[tuple[_Box, _Held]] = []
        to_renew: list[tuple[_Box, _Held]] = []
        with self._lock:
            retry = self._degraded_until
            if retry is not None and now < retry:
                return
        if retry is not None:
            self._check_store(now)
            return
        with self._lock:
            for box in self._boxes.values():
                # A mailbox this process stopped sending to gives every slot back soon (the end of a backlog
                # is when other instances wait for them); one still in use keeps its spare slots longer
                # unless another holder was seen. Holding every slot, it cannot see one: whoever waits gets
                # no slot to show up on, so a spare then goes soon too.
                quiet = box.busy == 0 and bool(box.held) and now - box.held[0].idle_since >= self.idle_s
                blind = len(box.held) >= self.capacity
                idle_s = self.idle_s if quiet or blind or now < box.shared_until else self.idle_alone_s
                if blind and box.busy == 0:
                    idle_s = 0.0  # every slot idle and nobody else can have one: the backlog moved on
                while len(box.held) > box.busy and now - box.held[-1].idle_since >= idle_s:
                    held = box.held.pop()
                    box.releasing.add(held.index)
                    to_release.append((box, held))
                to_renew.extend((box, h) for h in box.held if now - h.renewed_at >= self.renew_s)
        for box, h in to_release:
            released = self._release(h)
            with self._lock:
                box.releasing.discard(h.index)
                if released and h.index not in box.given_up:
                    box.given_up.append(h.index)
        for box, h in to_renew:
            self._renew(box, h)

    def _check_store(self, now: float) -> None:
        """Degraded: one cheap call to see whether the store answers again."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._count("check")
            self._container.get_container_properties()
        except ResourceNotFoundError:
            pass  # it answers; the next probe creates the container
        except Exception as exc:
            with self._lock:
                self._degraded_until = self._clock() + self.renew_s
            log.debug("slot store for %s still unavailable: %s", self.service, _describe(exc))
            return
        with self._lock:
            self._recovered()
            orphans = [h for box in self._boxes.values() for h in box.orphans]
            for box in self._boxes.values():
                box.orphans.clear()
                box.next_probe = 0.0
                box.cond.notify_all()
        # Leases from before the failure may still run at the server: give them back rather than let
        # them block a slot (ours included) until they expire.
        for h in orphans:
            self._release(h)

    def _renew(self, box: _Box, held: _Held) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self._count("renew")
            held.lease.renew()
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):  # the lease is someone else's now (it expired and was taken)
                with self._lock:
                    self._lose(box, held)
                log.warning("lost %s slot %d of a mailbox (lease taken after it expired)", self.service, held.index)
                return
            with self._lock:
                self._degrade(SlotStoreError(_describe(exc)), self._clock())
            return
        except Exception as exc:
            with self._lock:
                self._degrade(SlotStoreError(_describe(exc)), self._clock())
            return
        with self._lock:
            held.renewed_at = self._clock()
            self._recovered()

    def _lose(self, box: _Box, held: _Held) -> None:
        if held not in box.held:
            return
        position = box.held.index(held)
        box.held.pop(position)
        box.shared_until = self._clock() + self.lease_s
        if position < box.busy:
            # It was in use: that request goes on (it cannot be called back) without a lease behind it.
            box.busy -= 1
            box.unbacked += 1

    def _release(self, held: _Held) -> bool:
        try:
            self._count("release")
            held.lease.release()
        except Exception as exc:  # it expires by itself; a failed release only delays others
            log.info("could not release %s slot %d: %s", self.service, held.index, _describe(exc))
            return False
        return True


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
