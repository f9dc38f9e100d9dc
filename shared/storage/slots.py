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

Sticky leases alone let one instance with a backlog keep every slot while others hold messages they
cannot send, and hand the mailbox over one instance at a time at the end (each handover idle for a
probe). So an instance whose probe finds nothing free leases a want blob, ``.../want-<m>`` (m <
``WANT_BLOBS``), until none of its threads has waited for ``OUTBOX_SLOT_IDLE_S`` (at once when nothing of
its own is in flight there either: a want left standing holds the others to a smaller share). Whoever
holds more than one slot lists the mailbox's blobs now and then (every ``OUTBOX_SLOT_PROBE_S`` while
others wait, less often up to ``OUTBOX_SLOT_IDLE_ALONE_S`` while nobody does), and every listing sets
the fair share, ceil(capacity / (other instances waiting + 1)). Above it, a slot given back goes to the waiters (released,
and not taken back by us for two probe periods); at it, a free slot is left for one probe period to
whoever is below it; and with others waiting a slot nobody here wants goes back at once. A want lease
left by a crashed instance expires with its lease.

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
WANT_BLOBS = 16  # instances that can say at once that they wait for a mailbox's slot; more still get free ones


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
    waiting: int = 0  # threads of this process waiting in take()
    wanted_at: float = 0.0  # when a thread last waited (or stopped waiting)
    want: _Held | None = None  # our lease on a want-<m> blob: "this instance waits for a slot here"
    share: int | None = None  # the fair share the last listing allowed while others wait; None: nobody waits
    yielded: dict[int, float] = field(default_factory=dict)  # slots given to a waiter: not ours to take until then
    next_poll: float = 0.0  # holding several slots, when to list again to see who waits
    passed_over: set[int] = field(default_factory=set)  # free slots our last probe left to a waiter below its share
    poll_gap: float = 0.0


@dataclass(eq=False)
class _Look:
    """What one look at the store found (``BlobSlots._acquire_free``)."""

    found: tuple[int, Any] | None = None  # a slot now leased by us
    shared: bool = False  # another holder was seen
    wanters: int | None = None  # other instances' want leases; None when no listing was made
    want: tuple[int, Any] | None = None  # a want lease now ours


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
                box.waiting += 1
                box.wanted_at = now
                try:
                    box.cond.wait(timeout)
                finally:
                    box.waiting -= 1
                    box.wanted_at = self._clock()

    def give_back(self, mailbox: str) -> None:
        given: _Held | None = None
        unwanted: _Held | None = None
        with self._lock:
            box = self._boxes.get(mailbox.strip().lower())
            if box is None:
                return
            if box.unbacked > 0:
                box.unbacked -= 1
            elif box.busy > 0:
                box.busy -= 1
                if box.busy < len(box.held):
                    now = self._clock()
                    box.held[box.busy].idle_since = now
                    if box.share is not None and len(box.held) > box.share:
                        given = self._give_away(box, now)  # another instance waits: not for our next request
                    elif box.share is not None and box.waiting == 0:
                        # Others wait and none of our threads does: what we had for this mailbox is sent.
                        given = self._give_away(box, now, keep_out=False)
            if box.busy == 0 and box.waiting == 0 and box.want is not None and not box.probing:
                # Done here: a want left standing would hold the others to a smaller share (a holder at its
                # share leaves a free slot alone for a probe period). It goes before the slot does.
                unwanted, box.want = box.want, None
            if given is None:
                box.cond.notify()
        if unwanted is not None:
            self._release(unwanted)
        if given is not None:
            self._hand_over(box, given)

    def close(self) -> None:
        """Stop renewing and release every lease held, so other instances need not wait for expiry."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            held = [h for box in self._boxes.values() for h in box.held]
            held += [box.want for box in self._boxes.values() if box.want is not None]
            for box in self._boxes.values():
                box.held.clear()
                box.busy = 0
                box.want = None
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
        now = self._clock()
        # A slot just given to a waiting instance is not ours to take back before it had its chance.
        taken = {h.index for h in box.held} | box.releasing | {i for i, t in box.yielded.items() if t > now}
        own_want = box.want.index if box.want is not None else None
        self._lock.release()
        try:
            try:
                look = self._acquire_free(box, taken, own_want, len(box.held))
                error: SlotStoreError | None = None
            except SlotStoreError as exc:
                look, error = _Look(), exc
        finally:
            self._lock.acquire()
            box.probing = False
            box.cond.notify_all()
        now = self._clock()
        if error is not None:
            self._degrade(error, now)
            return False
        self._recovered()
        if look.shared:
            box.shared_until = now + self.lease_s
        if look.wanters is not None:
            self._seen(box, look.wanters, now)
        if look.want is not None:
            box.want = _Held(look.want[0], look.want[1], now, now)
        if look.found is None:
            box.next_probe = now + self.probe_s
            return False
        index, lease = look.found
        box.held.insert(box.busy, _Held(index, lease, now, now))
        return True

    def _seen(self, box: _Box, wanters: int, now: float) -> None:
        """A listing showed ``wanters`` other instances waiting: hold no more than a fair share meanwhile."""
        if wanters:
            box.share = self._fair_share(wanters)
            box.shared_until = now + self.lease_s
            box.poll_gap = self.probe_s
        else:
            box.share = None
            # Nobody waits: look half as often each time, up to the longer idle time (or a renewal period),
            # so what a lone instance spends on looking stays small.
            longest = min(max(self.idle_alone_s, self.probe_s), self.renew_s)
            box.poll_gap = min(longest, max(self.probe_s, 2 * box.poll_gap))
        box.next_poll = now + box.poll_gap

    def _fair_share(self, wanters: int) -> int:
        return max(1, -(-self.capacity // (wanters + 1)))  # rounded up: the shares cover every slot

    def _acquire_free(self, box: _Box, taken: set[int], own_want: int | None, holding: int) -> _Look:
        """Without the lock: a slot this process gave up tried first, else one listing, the slot blobs created
        once, one acquire per free slot tried, and when none was free a want lease unless we hold one. Also
        says whether another holder was seen and how many other instances wait."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.storage.blob import BlobLeaseClient

        try:
            at_share = box.share is not None and holding >= box.share
            again = None if at_share else self._take_back(box, taken)
            if again is not None:
                return _Look(found=again)
            states, wants = self._lease_states(box.prefix)
            shared, wanters = _others(states, wants, taken, own_want)
            look = _Look(shared=shared, wanters=wanters)
            if not box.blobs_exist:
                for index in range(self.capacity):
                    if index not in states:
                        self._create_blob(f"{box.prefix}slot-{index}")
                        states[index] = "available"
                box.blobs_exist = True
            free = [i for i in range(self.capacity) if i not in taken and states.get(i) in FREE_STATES]
            if look.wanters and holding >= self._fair_share(look.wanters):
                # At our share while others wait: a free slot is theirs first. One their probes have had a
                # turn at (free in our last look too) is ours, so a want left by a crashed instance costs
                # a probe period, not a slot.
                free, box.passed_over = [i for i in free if i in box.passed_over], set(free)
            else:
                box.passed_over = set()
            random.shuffle(free)  # instances probing together should not all want slot 0
            for index in free:
                lease = BlobLeaseClient(self._container.get_blob_client(f"{box.prefix}slot-{index}"))
                try:
                    self._count("acquire")
                    lease.acquire(lease_duration=self.lease_s)
                    look.found = (index, lease)
                    return look
                except ResourceNotFoundError:
                    box.blobs_exist = False  # deleted under us: made again on the next probe
                except HttpResponseError as exc:
                    if exc.status_code != 409:  # 409 LeaseAlreadyPresent: someone was faster
                        raise
                    self._count("acquire_taken")
                    look.shared = True
            if own_want is None:
                look.want = self._want(box, wants)
            return look
        except SlotStoreError:
            raise
        except Exception as exc:  # down, slow (timeout), refused: all mean "do not rely on the store"
            raise SlotStoreError(_describe(exc)) from exc

    def _want(self, box: _Box, wants: dict[int, str]) -> tuple[int, Any] | None:
        """Without the lock: lease a free want blob, so holders above their fair share see us waiting (one
        operation; the blob is made the first time). Taken meanwhile: the next probe tries again."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
        from azure.storage.blob import BlobLeaseClient

        free = [m for m, state in wants.items() if state in FREE_STATES and m < WANT_BLOBS]
        if free:
            index = random.choice(free)  # instances waiting together should not all want want-0
        else:
            missing = [m for m in range(WANT_BLOBS) if m not in wants]
            if not missing:
                return None  # WANT_BLOBS instances wait already: ours is no news to a holder
            index = missing[0]
            self._create_blob(f"{box.prefix}want-{index}")
        lease = BlobLeaseClient(self._container.get_blob_client(f"{box.prefix}want-{index}"))
        try:
            self._count("want")
            lease.acquire(lease_duration=self.lease_s)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            if exc.status_code != 409:
                raise
            self._count("want_taken")
            return None
        return index, lease

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

    def _lease_states(self, prefix: str) -> tuple[dict[int, str], dict[int, str]]:
        """One listing: the lease state of each slot blob and of each want blob, by number."""
        from azure.core.exceptions import ResourceNotFoundError

        self._count("list")
        try:
            listing = list(self._container.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            self._create_container()
            return {}, {}
        states: dict[int, str] = {}
        wants: dict[int, str] = {}
        for blob in listing:
            tail = blob.name[len(prefix):]
            kind, _, number = tail.partition("-")
            if kind in ("slot", "want") and number.isdigit():
                state = str(getattr(blob.lease, "state", None) or "available").lower()
                (states if kind == "slot" else wants)[int(number)] = state
        return states, wants

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
            if box.want is not None:
                box.orphans.append(box.want)
                box.want = None
            box.share = None
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
        unwanted: list[_Held] = []
        want_renew: list[tuple[_Box, _Held]] = []
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
                # unless another holder was seen. Holding every slot, it sees a waiter only at its next look
                # at the want blobs, so a spare then goes soon too.
                quiet = box.busy == 0 and bool(box.held) and now - box.held[0].idle_since >= self.idle_s
                blind = len(box.held) >= self.capacity
                idle_s = self.idle_s if quiet or blind or now < box.shared_until else self.idle_alone_s
                if blind and box.busy == 0:
                    idle_s = 0.0  # every slot idle and nobody else can have one: the backlog moved on
                while len(box.held) > box.busy and now - box.held[-1].idle_since >= idle_s:
                    to_release.append((box, self._give_away(box, now, keep_out=False)))
                # Others wait and we hold more than a fair share: our idle spares are theirs now.
                to_release.extend((box, h) for h in self._over_share(box, now))
                to_renew.extend((box, h) for h in box.held if now - h.renewed_at >= self.renew_s)
                if box.want is not None:
                    if box.waiting == 0 and not box.probing and now - box.wanted_at >= self.idle_s:
                        unwanted.append(box.want)  # every thread served for a while: we wait no more
                        box.want = None
                    elif now - box.want.renewed_at >= self.renew_s:
                        want_renew.append((box, box.want))
            polls = [b for b in self._boxes.values() if len(b.held) > 1 and not b.probing and now >= b.next_poll]
            poll = min(polls, key=lambda b: b.next_poll, default=None)
        for h in unwanted:  # before the slots, as in give_back
            self._release(h)
        for box, h in to_release:
            self._hand_over(box, h)
        for box, h in to_renew:
            self._renew(box, h)
        for box, h in want_renew:
            self._renew_want(box, h)
        if poll is not None:
            self._poll(poll)

    def _poll(self, box: _Box) -> None:
        """Holding several slots: one listing to see whether other instances wait for one (their want leases),
        at most one mailbox per keeper tick, less often while nobody does. A failed look only waits for the
        next; the probes and renewals are what decide that the store is down."""
        with self._lock:
            own_want = box.want.index if box.want is not None else None
            ours = {h.index for h in box.held} | box.releasing
        try:
            states, wants = self._lease_states(box.prefix)
        except Exception as exc:
            log.debug("could not look for instances waiting for %s slots: %s", self.service, _describe(exc))
            with self._lock:
                box.next_poll = self._clock() + max(self.probe_s, box.poll_gap)
            return
        shared, wanters = _others(states, wants, ours, own_want)
        with self._lock:
            now = self._clock()
            if shared:
                box.shared_until = now + self.lease_s
            self._seen(box, wanters, now)
            given = self._over_share(box, now)
        for h in given:
            self._hand_over(box, h)

    def _over_share(self, box: _Box, now: float) -> list[_Held]:
        """The idle slots above our fair share while others wait, taken off our stack (the lock held)."""
        given: list[_Held] = []
        while box.share is not None and len(box.held) > max(box.share, box.busy):
            given.append(self._give_away(box, now))
        return given

    def _give_away(self, box: _Box, now: float, *, keep_out: bool = True) -> _Held:
        """An idle slot off our stack, to be released (the lock held; held[busy:] are idle). ``keep_out``: given
        to an instance that waits, so not ours to take back for two probe periods (its next probe finds it
        free)."""
        held = box.held.pop()
        box.releasing.add(held.index)
        if keep_out:
            box.yielded[held.index] = now + 2 * self.probe_s
        return held

    def _hand_over(self, box: _Box, held: _Held) -> None:
        """Without the lock: release a slot taken off our stack (idle, or given away). Unless it was given to
        a waiter, a later want of ours tries it first (one acquire, if nobody has taken it)."""
        released = self._release(held)
        with self._lock:
            box.releasing.discard(held.index)
            kept_out = box.yielded.get(held.index, 0.0) > self._clock()
            if released and not kept_out and held.index not in box.given_up:
                box.given_up.append(held.index)

    def _renew_want(self, box: _Box, held: _Held) -> None:
        try:
            self._count("want_renew")
            held.lease.renew()
        except Exception as exc:  # lost or unreachable: we are just not seen waiting until the next probe
            log.debug("could not renew a want lease for %s: %s", self.service, _describe(exc))
            with self._lock:
                if box.want is held:
                    box.want = None
            return
        with self._lock:
            held.renewed_at = self._clock()

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


def _others(states: dict[int, str], wants: dict[int, str], ours: set[int],
            own_want: int | None) -> tuple[bool, int]:
    """From one listing: whether a slot we do not hold is leased, and how many other instances wait."""
    shared = any(i not in ours and state not in FREE_STATES for i, state in states.items())
    return shared, sum(1 for m, state in wants.items() if m != own_want and state not in FREE_STATES)


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {code}' if code else ''}"
