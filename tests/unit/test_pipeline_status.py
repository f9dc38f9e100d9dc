"""Status-table claims over Azurite: atomic, leased, and what the CLI's requeue needs."""

from __future__ import annotations

import threading

import pytest

from harness.azurite import Azurite
from shared.errors import OutboxError
from shared.status import ClaimKind, StatusStore
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
    view = store.get("v").public()  # type: ignore[union-attr]
    assert view["state"] == "sent" and view["requestIds"] == ["r1", "r2"] and view["sentAt"].endswith("Z")
    assert "secret-owner" not in repr(view)
