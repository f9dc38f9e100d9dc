"""Status-table claims over Azurite: atomic, leased, and what the CLI's requeue needs."""

from __future__ import annotations

import threading

import pytest

from harness.azurite import Azurite
from shared.errors import OutboxError
from shared.storage.status import ClaimKind, StatusStore
from tests.unit.test_pipeline_support import unique


@pytest.fixture
def service(azurite: Azurite) -> object:
    from azure.data.tables import TableServiceClient

    return TableServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def store(service: object) -> StatusStore:
    return StatusStore(service, unique("status"))


def test_two_copies_claiming_at_once_only_one_wins(store: StatusStore) -> None:
    results = []
    barrier = threading.Barrier(6)

    def claim(owner: str) -> None:
        barrier.wait()
        results.append(store.claim("race", owner=owner, lease_s=60, transport="graph", mailbox="a@b.example"))

    threads = [threading.Thread(target=claim, args=(f"q{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = sorted(r.kind.value for r in results)
    assert kinds.count("claimed") == 1 and kinds.count("in_flight") == 5
    row = store.get("race")
    assert row is not None and row.attempts == 1 and row.state == "sending"


def test_claim_counts_attempts_and_keeps_first_seen(store: StatusStore) -> None:
    first = store.claim("m", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_retrying("m", error=OutboxError("transient", "x", retryable=True), delay_s=5)
    second = store.claim("m", owner="q2", lease_s=60, transport="graph", mailbox="a@b.example")
    assert second.kind is ClaimKind.CLAIMED and second.row.attempts == 2
    assert second.row.first_seen == first.row.first_seen
    assert not second.previous_unknown and second.previous_state == "retrying"


def test_same_owner_finding_its_own_claim_means_unknown_outcome(store: StatusStore) -> None:
    store.claim("c", owner="q1", lease_s=60, transport="smtp", mailbox="a@b.example")
    again = store.claim("c", owner="q1", lease_s=60, transport="smtp", mailbox="a@b.example")
    assert again.kind is ClaimKind.CLAIMED and again.previous_unknown and again.row.attempts == 2


def test_sent_and_poisoned_rows_are_not_claimed(store: StatusStore) -> None:
    store.claim("s", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_sent("s", transport="graph", request_ids=["r1"])
    assert store.claim("s", owner="q2", lease_s=60, transport="graph", mailbox=None).kind is ClaimKind.ALREADY_SENT
    store.claim("p", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_poisoned("p", error=OutboxError("permission", "ErrorAccessDenied", hint="h"), attempts=1)
    assert store.claim("p", owner="q2", lease_s=60, transport="graph", mailbox=None).kind is ClaimKind.POISONED


def test_reset_for_requeue_gives_a_poisoned_message_a_new_budget(store: StatusStore) -> None:
    store.claim("r", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_poisoned("r", error=OutboxError("auth", "5.7.3", hint="grant it"), attempts=3)
    row = store.reset_for_requeue("r")
    assert row.state == "queued" and row.attempts == 0 and row.last_code == "5.7.3"
    claim = store.claim("r", owner="q9", lease_s=60, transport="graph", mailbox="a@b.example")
    assert claim.kind is ClaimKind.CLAIMED and claim.row.attempts == 1


def test_public_view_has_no_lease_internals(store: StatusStore) -> None:
    store.claim("v", owner="secret-owner", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_sent("v", transport="graph", request_ids=["r1", "r2"])
    view = store.get("v").public()
    assert view["state"] == "sent" and view["requestIds"] == ["r1", "r2"] and view["sentAt"].endswith("Z")
    assert "secret-owner" not in repr(view)


TIME_COLUMNS = ("FirstSeen", "UpdatedAt", "SentAt", "LeaseUntil", "NextAttemptAt")


def _raw(store: StatusStore, message_id: str) -> dict[str, object]:
    return dict(store.table.get_entity(partition_key=message_id, row_key=""))


def _times_are_times(entity: dict[str, object]) -> dict[str, object]:
    from datetime import datetime

    return {name: entity[name] for name in TIME_COLUMNS if name in entity and not isinstance(entity[name], datetime)}


def test_time_columns_hold_times_or_are_absent_through_every_state(store: StatusStore) -> None:
    # A typed reader (.NET DateTimeOffset?, a POCO) fails on "" in a time column: cleared means absent.
    first = store.claim("typed", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    assert _times_are_times(_raw(store, "typed")) == {}
    store.mark_retrying("typed", error=OutboxError("transient", "x", status=503, retryable=True), delay_s=5,
                        previous=first.row)
    entity = _raw(store, "typed")
    assert _times_are_times(entity) == {} and "LeaseUntil" not in entity and "LeaseOwner" not in entity
    second = store.claim("typed", owner="q2", lease_s=60, transport="graph", mailbox="a@b.example")
    entity = _raw(store, "typed")
    assert _times_are_times(entity) == {} and "NextAttemptAt" not in entity
    store.mark_sent("typed", transport="graph", request_ids=["r1"], previous=second.row)
    entity = _raw(store, "typed")
    assert _times_are_times(entity) == {} and "LeaseUntil" not in entity and "NextAttemptAt" not in entity
    assert entity["State"] == "sent" and entity["Attempts"] == 2 and entity["FirstSeen"] == first.row.first_seen


def test_the_last_error_is_the_last_one_whole(store: StatusStore) -> None:
    first = store.claim("last", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_retrying("last", error=OutboxError("transient", "serviceNotAvailable", status=503, retryable=True,
                                                  hint="later"), delay_s=1, previous=first.row)
    second = store.claim("last", owner="q2", lease_s=60, transport="graph", mailbox="a@b.example")
    store.mark_retrying("last", error=OutboxError("transient", "outbox.connect_refused", retryable=True),
                        delay_s=1, previous=second.row)
    entity = _raw(store, "last")
    assert entity["LastCode"] == "outbox.connect_refused" and "LastStatus" not in entity and "LastHint" not in entity
    row = store.get("last")
    assert row is not None and row.last_status is None and row.last_hint is None and row.attempts == 2


def test_release_and_requeue_leave_no_empty_time_columns(store: StatusStore) -> None:
    claim = store.claim("rel", owner="q1", lease_s=60, transport="graph", mailbox="a@b.example")
    store.release("rel", attempts=0, state="queued", delay_s=2, previous=claim.row)
    entity = _raw(store, "rel")
    assert _times_are_times(entity) == {} and "LeaseUntil" not in entity and entity["Attempts"] == 0
    store.mark_poisoned("rel", error=OutboxError("auth", "5.7.3", status=535, hint="grant it"), attempts=1)
    row = store.reset_for_requeue("rel")
    entity = _raw(store, "rel")
    assert _times_are_times(entity) == {} and "NextAttemptAt" not in entity
    assert row.state == "queued" and row.last_code == "5.7.3"  # the history stays for the operator
