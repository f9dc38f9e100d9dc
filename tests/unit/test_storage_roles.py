"""Storage with the least privilege the deployment grants producers and operators on the work queue.

Azurite has no RBAC, so the one answer it cannot give (403 to create_queue for an identity holding only
Storage Queue Data Message Sender) comes from a stand-in queue service: a seam nothing else reaches.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.errors import ConfigError
from shared.storage.queues import QueueStore
from shared.storage.status import StatusStore


class SenderOnlyQueue:
    """Answers like Azure Storage for a principal that may only add messages."""

    def __init__(self, status: int, *, exists: bool = True) -> None:
        self.status = status
        self.exists = exists
        self.sent: list[str] = []

    def create_queue(self) -> None:
        error = HttpResponseError(message="This request is not authorized to perform this operation using this permission.")
        error.status_code = self.status
        raise error

    def send_message(self, text: str, visibility_timeout: Any = None) -> Any:
        if not self.exists:
            raise ResourceNotFoundError(message="The specified queue does not exist.")
        self.sent.append(text)
        return SimpleNamespace(id=f"m{len(self.sent)}")

    def close(self) -> None:
        pass


class Service:
    def __init__(self, queue: SenderOnlyQueue) -> None:
        self.queue = queue

    def get_queue_client(self, name: str) -> SenderOnlyQueue:
        return self.queue


def store_for(queue: SenderOnlyQueue) -> QueueStore:
    return QueueStore(Service(queue), queue="outbox", poison_queue="outbox-poison")


MESSAGE = {"id": "r-1", "from": "a@contoso.example", "to": ["b@fabrikam.example"], "subject": "s", "text": "t"}


def test_message_sender_role_can_enqueue_without_creating_the_queue() -> None:
    queue = SenderOnlyQueue(403)

    store_for(queue).enqueue(MESSAGE)

    assert len(queue.sent) == 1 and '"id":"r-1"' in queue.sent[0]


def test_a_queue_that_is_really_missing_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="queue 'outbox' does not exist") as err:
        store_for(SenderOnlyQueue(403, exists=False)).enqueue(MESSAGE)
    assert err.value.code == "storage.queue_missing" and "outbox" in err.value.hint


def test_bad_credentials_still_stop_with_a_config_error() -> None:
    queue = SenderOnlyQueue(401)
    with pytest.raises(ConfigError):
        store_for(queue).enqueue(MESSAGE)
    assert queue.sent == []


class TableScopedRole:
    """A role scoped to one table: Create Table (sent to /Tables) is refused, reading rows is not."""

    def __init__(self, *, exists: bool) -> None:
        self.exists = exists

    def get_table_client(self, name: str) -> TableScopedRole:
        return self

    def create_table(self) -> None:
        error = HttpResponseError(message="This request is not authorized to perform this operation.")
        error.status_code = 403
        raise error

    def query_entities(self, query: str, results_per_page: int) -> list[Any]:
        if not self.exists:
            raise ResourceNotFoundError(message="The table specified does not exist.")
        return []


def test_status_table_that_exists_is_used_although_create_is_refused() -> None:
    service = TableScopedRole(exists=True)
    assert StatusStore(service, "outboxstatus").table is service


def test_status_table_that_is_missing_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="table 'outboxstatus' does not exist"):
        _ = StatusStore(TableScopedRole(exists=False), "outboxstatus").table
