"""The mailbox slot blobs (docs/contracts.md, "Mailbox slot blobs, v1"), played from the other side with
azure-storage-blob only: another instance (or an older version) that leases the documented blobs holds
outbox's slots, and outbox leases exactly the blobs the contract names."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.azurite import Azurite
from shared.settings import load_settings
from shared.storage import StorageOptions, build_slots, slot_client_options

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
MAILBOX = " Sender@Contoso.Example "


def _names(service: str, count: int) -> list[str]:
    digest = hashlib.sha256(MAILBOX.strip().lower().encode("utf-8")).hexdigest()[:32]
    return [f"{service}/{CLIENT_ID}/{digest}/slot-{n}" for n in range(count)]


@pytest.fixture
def world(azurite: Azurite) -> Iterator[tuple[Any, Any]]:
    from azure.storage.blob import BlobServiceClient

    container = f"slots-{uuid.uuid4().hex[:12]}"
    settings = load_settings({"OUTBOX_QUEUE": "outbox", "AzureWebJobsStorage": azurite.connection_string,
                              "OUTBOX_CLIENT_ID": CLIENT_ID, "OUTBOX_SLOTS_CONTAINER": container})
    client = settings.storage.blob_service_client(**slot_client_options(settings, StorageOptions.function(settings)))
    slots = build_slots(settings, client)
    other = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    other.create_container()
    yield slots, other
    slots.graph.close()
    slots.smtp.close()
    client.close()
    other.delete_container()


def test_outbox_leases_the_documented_blobs(world: tuple[Any, Any]) -> None:
    slots, other = world
    assert all(slots.graph.take(MAILBOX, 2.0) for _ in range(4))
    assert all(slots.smtp.take(MAILBOX, 2.0) for _ in range(3))
    leased = {b.name for b in other.list_blobs() if b.lease.state == "leased"}
    assert leased == set(_names("graph", 4)) | set(_names("smtp", 3))


def test_a_lease_held_by_another_instance_is_a_slot_outbox_does_not_get(world: tuple[Any, Any]) -> None:
    from azure.storage.blob import BlobLeaseClient

    slots, other = world
    for name in _names("graph", 4)[:3]:
        other.upload_blob(name, b"", overwrite=True)
        BlobLeaseClient(other.get_blob_client(name)).acquire(lease_duration=15)
    assert slots.graph.take(MAILBOX, 2.0) is True  # the fourth
    assert slots.graph.take(MAILBOX, 0.5) is False


def test_requests_another_instance_counted_in_the_budget_blob_are_not_granted_again(
        world: tuple[Any, Any]) -> None:
    import time

    slots, other = world
    digest = hashlib.sha256(MAILBOX.strip().lower().encode("utf-8")).hexdigest()[:32]
    bucket = int(time.time() // (600 / 40))  # the default window, OUTBOX_GRAPH_BUDGET_WINDOW_S = 600
    # Another instance granted itself 9,999 of the 10,000 in this bucket.
    other.upload_blob(f"budget/{CLIENT_ID}/{digest}", b"", metadata={f"b{bucket}": "9999"}, overwrite=True)
    budget = slots.graph_budget
    assert budget.take(MAILBOX) == 0.0  # the last one
    assert budget.take(MAILBOX) > 0  # then wait: the window is full across instances
    metadata = other.get_blob_client(f"budget/{CLIENT_ID}/{digest}").get_blob_properties().metadata
    assert sum(int(v) for k, v in metadata.items() if k.startswith("b")) == 10_000


def test_an_outbox_waiting_for_a_slot_says_so_with_a_want_lease_and_drops_it_once_served(
        world: tuple[Any, Any]) -> None:
    from azure.storage.blob import BlobLeaseClient

    from tests.waiting import wait_until

    slots, other = world
    leases = []
    for name in _names("graph", 4):
        other.upload_blob(name, b"", overwrite=True)
        leases.append(BlobLeaseClient(other.get_blob_client(name)))
        leases[-1].acquire(lease_duration=15)
    prefix = _names("graph", 1)[0].rsplit("/", 1)[0] + "/"

    def wanting() -> set[str]:
        return {b.name for b in other.list_blobs(name_starts_with=prefix)
                if b.name.startswith(prefix + "want-") and b.lease.state == "leased"}

    assert slots.graph.take(MAILBOX, 0.5) is False  # every slot is the other instance's
    waits = wanting()
    assert len(waits) == 1 and waits.pop()[len(prefix) + 5:].isdigit(), waits  # want-<m>, as documented
    # Nobody waits any more: the want lease goes back within OUTBOX_SLOT_IDLE_S (and a keeper tick).
    wait_until(lambda: not wanting(), 10, message="outbox still says it waits")
    for lease in leases:
        lease.release()
