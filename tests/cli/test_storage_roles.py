"""The CLI with the least privilege the deployment grants an operator on the work queue.

Azurite has no RBAC, so the one answer it cannot give (403 to create_queue for an identity holding only
Storage Queue Data Message Sender) comes from a stand-in queue service: a seam nothing else reaches.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from shared.cli.storage import queue_store
from shared.errors import ConfigError


class SenderOnlyQueue:
    """Answers like Azure Storage for a principal that may only add messages."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sent: list[str] = []

    def create_queue(self) -> None:
        error = HttpResponseError(message="This request is not authorized to perform this operation using this permission.")
        error.status_code = self.status
        raise error

    def send_message(self, text: str, visibility_timeout: Any = None) -> Any:
        self.sent.append(text)
        return SimpleNamespace(id=f"m{len(self.sent)}")

    def close(self) -> None:
        pass


class Service:
    def __init__(self, queue: SenderOnlyQueue) -> None:
        self.queue = queue

    def get_queue_client(self, name: str) -> SenderOnlyQueue:
        return self.queue


def test_message_sender_role_can_enqueue_without_creating_the_queue(cli: Any) -> None:
    queue = SenderOnlyQueue(403)
    store = queue_store(cli.settings(), queue_service=Service(queue))

    store.enqueue({"id": "r-1", "from": "a@contoso.example", "to": ["b@fabrikam.example"], "subject": "s", "text": "t"})

    assert len(queue.sent) == 1 and '"id":"r-1"' in queue.sent[0]


def test_bad_credentials_still_stop_with_a_config_error(cli: Any) -> None:
    store = queue_store(cli.settings(), queue_service=Service(SenderOnlyQueue(401)))

    with pytest.raises(ConfigError):
        store.enqueue({"id": "r-2", "from": "a@contoso.example", "to": ["b@fabrikam.example"], "subject": "s"})
