"""Contract tests: independent parts played against outbox, using only the documented contracts.

Nothing here imports outbox's own model, queue or status helpers (``shared.message``, ``shared.storage.queues``,
``shared.storage.status``, ``shared.catalog``): a producer writes queue text with azure-storage-queue, an operator
reads the poison queue and the status table with azure-storage-queue and azure-data-tables, and the
expectations come from design.md, docs/*.md and reference/m365-send-errors.md, written out here.

Two ways to run the function:
- ``LocalStack``: the local Functions host (``harness.localhost``) polling a queue, the end-to-end path a
  producer sees (host.json's ``messageEncoding`` included);
- ``HostPlay``: this module plays the Functions host itself: it indexes the app by the worker's rule and
  calls the queue function with an ``azure.functions`` QueueMessage, one invocation at a time, so a test
  can look at what one invocation left behind (a retry body, a status row) before the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.azurite import Azurite
from harness.up import Harness
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SENDER = "sender@contoso.example"
NOREPLY = "noreply@contoso.example"
TENANT_DOMAIN = "contoso.example"

# design.md, "Poison envelope" and "Status table".
POISON_SCHEMA = "outbox.poison/1"
ENVELOPE_KEYS = {"schema", "message", "error", "attempts", "firstSeen", "failedAt"}
ERROR_KEYS = {"category", "code", "status", "transport", "retryable", "detail", "hint", "requestId"}
CATEGORIES = {"invalid_message", "auth", "permission", "recipient", "size", "quota", "throttled", "transient",
              "config", "unknown"}
DESIGN_STATES = {"queued", "sending", "sent", "retrying", "poisoned"}
# Documented extras (docs/pipeline.md, docs/contracts.md).
EXTRA_STATES = {"ambiguous", "failed"}
# Documented addition (docs/pipeline.md, docs/contracts.md): an envelope whose original was parked in the
# attachment container has "message": null and names the blob, its size and the message id.
PARKED_KEYS = {"messageBlob", "messageBytes", "id"}

FAST = {
    "OUTBOX_BACKOFF_BASE_S": "1",
    "OUTBOX_BACKOFF_MAX_S": "1",
    "OUTBOX_RETRY_AFTER_MAX_S": "5",
    "OUTBOX_MAX_ATTEMPTS": "3",
    "OUTBOX_LEASE_S": "5",
    "OUTBOX_LOOKUP_SETTLE_S": "0",
    "OUTBOX_HTTP_TIMEOUT_S": "5",
    "OUTBOX_SMTP_TIMEOUT_S": "5",
    "OUTBOX_PACING_MAX_WAIT_S": "0.5",
}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def mail(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": SENDER, "to": ["alice@fabrikam.example"], "subject": "Hello", "text": "Hi"}
    body.update(fields)
    return body


def written_settings(harness: Harness) -> dict[str, str]:
    """The Values of the local.settings.json that ``python -m harness up`` writes (the documented file)."""
    data = json.loads((harness.state_dir / "local.settings.json").read_text(encoding="utf-8"))
    return {k: str(v) for k, v in data["Values"].items()}


def contract_values(harness: Harness, azurite: Azurite, **overrides: str) -> dict[str, str]:
    """Settings for one test: the harness's written file, Azurite, unique queue/table/container names."""
    values = written_settings(harness)
    values.update(FAST)
    values.update({
        "AzureWebJobsStorage": azurite.connection_string,
        "OUTBOX_QUEUE": unique("ct-"),
        "OUTBOX_STATUS_TABLE": unique("ct"),
        "OUTBOX_ATTACHMENTS_CONTAINER": unique("ct-att-"),
    })
    values.update(overrides)
    return values


# -- the operator's side: raw storage reads ----------------------------------------------------------------


class Storage:
    """What an independent operator tool sees: queues, the status table and blobs, read with the SDKs."""

    def __init__(self, connection_string: str, values: Mapping[str, str]) -> None:
        from azure.data.tables import TableServiceClient
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        self.values = values
        self.queues = QueueServiceClient.from_connection_string(connection_string)
        self.queue = self.queues.get_queue_client(values["OUTBOX_QUEUE"])
        self.poison_queue = self.queues.get_queue_client(values["OUTBOX_QUEUE"] + "-poison")
        self.tables = TableServiceClient.from_connection_string(connection_string)
        self.table = self.tables.get_table_client(values.get("OUTBOX_STATUS_TABLE") or "outboxstatus")
        self.blobs = BlobServiceClient.from_connection_string(connection_string)
        self.connection_string = connection_string

    def create_queue(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self.queue.create_queue()

    def send(self, text: str, **kwargs: Any) -> str:
        return str(self.queue.send_message(text, **kwargs).id)

    def rows(self, message_id: str) -> list[dict[str, Any]]:
        """Every status row of one message id (PartitionKey = id): the contract says exactly one."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return [dict(e) for e in self.table.query_entities("PartitionKey eq @id", parameters={"id": message_id})]
        except ResourceNotFoundError:
            return []

    def row(self, message_id: str) -> dict[str, Any] | None:
        rows = self.rows(message_id)
        assert len(rows) <= 1, f"{len(rows)} status rows for {message_id}"
        return rows[0] if rows else None

    def wait_row(self, message_id: str, *states: str, timeout: float = 60.0,
                 wait: Callable[[float], object] | None = None) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            row = self.row(message_id)
            return row if row is not None and row.get("State") in states else None

        return wait_until(reached, timeout, sleep=wait or time.sleep,
                          message=lambda: f"{message_id}: row {self.row(message_id)!r}, wanted state in {states}")

    def take_poison(self, count: int = 1, *, timeout: float = 60.0,
                    wait: Callable[[float], object] | None = None) -> list[str]:
        """``count`` raw poison texts (deleted as read)."""
        got: list[str] = []

        def enough() -> bool:
            try:
                batch = list(self.poison_queue.receive_messages(max_messages=32, visibility_timeout=60))
            except Exception:  # the poison queue exists only after the first poison
                batch = []
            for m in batch:
                got.append(m.content)
                self.poison_queue.delete_message(m)
            return len(got) >= count

        wait_until(enough, timeout, sleep=wait or time.sleep,
                   message=lambda: f"{len(got)} of {count} poison messages after {timeout} s")
        return got

    def receive_work(self, *, timeout: float = 30.0, visibility: int = 30) -> Any:
        """The next visible message on the work queue (a retry body), or AssertionError."""
        got = wait_until(lambda: list(self.queue.receive_messages(max_messages=1, visibility_timeout=visibility)),
                         timeout, message=f"nothing on {self.queue.queue_name} after {timeout} s")
        return got[0]

    def close(self) -> None:
        for client in (self.queue, self.poison_queue, self.table):
            with contextlib.suppress(Exception):
                client.close()


# -- playing the Functions host ------------------------------------------------------------------------


@dataclass
class Invocation:
    ok: bool
    error: BaseException | None
    queue_message_id: str = ""


class HostPlay:
    """The Functions host, played by the test: worker indexing rule, then one call per queue message.

    The environment is the app settings (monkeypatched, so undone after the test), exactly as the host
    gives them to the worker; messageEncoding ``none`` means the body is the queue text as it is.
    """

    def __init__(self, values: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, azurite: Azurite) -> None:
        from harness.localhost import index_app, indexed_functions

        self.values = dict(values)
        for key in list(os.environ):
            if key.startswith(("OUTBOX_", "IDENTITY_", "AzureWebJobs")) or key in ("AZURE_CLIENT_ID",):
                monkeypatch.delenv(key)
        for key, value in self.values.items():
            monkeypatch.setenv(key, value)
        self._drop_runtime()
        app = index_app(ROOT, self.values)
        functions = {f.name: f for f in indexed_functions(app)}
        self.queue_fn = functions["outbox_queue"]
        self.storage = Storage(azurite.connection_string, self.values)
        self.storage.create_queue()

    @staticmethod
    def _drop_runtime() -> None:
        # The app keeps one runtime per worker process; each test is a fresh "worker".
        from function_app.runtime import close_runtime

        close_runtime()

    def invoke_text(self, text: str, *, message_id: str | None = None, dequeue_count: int = 1) -> Invocation:
        from azure.functions.queue import QueueMessage

        msg = QueueMessage(id=message_id or uuid.uuid4().hex, body=text.encode("utf-8"), dequeue_count=dequeue_count,
                           pop_receipt="receipt")
        try:
            self.queue_fn.fn(**{self.queue_fn.trigger.name: msg})
        except Exception as exc:
            return Invocation(False, exc, msg.id)
        return Invocation(True, None, msg.id)

    def deliver(self, body: Mapping[str, Any] | str, **kwargs: Any) -> Invocation:
        """Put a producer body on the queue, receive it as the host does, invoke, delete on success."""
        text = body if isinstance(body, str) else json.dumps(body)
        self.storage.send(text)
        return self.invoke_next(**kwargs)

    def invoke_next(self, *, timeout: float = 30.0) -> Invocation:
        msg = self.storage.receive_work(timeout=timeout)
        from azure.functions.queue import QueueMessage

        qm = QueueMessage(id=msg.id, body=msg.content.encode("utf-8"), dequeue_count=msg.dequeue_count,
                          pop_receipt=msg.pop_receipt)
        try:
            self.queue_fn.fn(**{self.queue_fn.trigger.name: qm})
        except Exception as exc:
            return Invocation(False, exc, msg.id)
        self.storage.queue.delete_message(msg.id, msg.pop_receipt)
        return Invocation(True, None, msg.id)

    def close(self) -> None:
        self._drop_runtime()
        self.storage.close()


@pytest.fixture
def host_play(harness: Harness, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., HostPlay]]:
    made: list[HostPlay] = []

    def factory(**overrides: str) -> HostPlay:
        play = HostPlay(contract_values(harness, azurite, **overrides), monkeypatch, azurite)
        made.append(play)
        return play

    try:
        yield factory
    finally:
        for play in made:
            play.close()


# -- the local host: end to end ---------------------------------------------------------------------------


class LocalStack:
    def __init__(self, harness: Harness, values: dict[str, str], host: Any, storage: Storage) -> None:
        self.harness = harness
        self.values = values
        self.host = host
        self.storage = storage

    def wait(self, seconds: float) -> None:
        self.host.wait_until(lambda: False, seconds)

    def wait_row(self, message_id: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.storage.wait_row(message_id, *states, timeout=timeout, wait=self.wait)

    def take_poison(self, count: int = 1, timeout: float = 60.0) -> list[str]:
        return self.storage.take_poison(count, timeout=timeout, wait=self.wait)


@pytest.fixture
def local_stack(harness: Harness, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., LocalStack]]:
    from harness.localhost import LocalHost

    for key in list(os.environ):
        if key.startswith(("OUTBOX_", "IDENTITY_", "AzureWebJobs", "PYTHON_SCRIPT_FILE_NAME")) or key == "AZURE_CLIENT_ID":
            monkeypatch.delenv(key)
    started: list[tuple[Any, Storage]] = []

    def factory(*, host: Mapping[str, Any] | None = None, http: bool = False, **overrides: str) -> LocalStack:
        values = contract_values(harness, azurite, **overrides)
        storage = Storage(azurite.connection_string, values)
        storage.create_queue()
        local = LocalHost(app_root=ROOT, values=values, http_port=0 if http else None, function_key="contract-key",
                          queue_overrides={"max_polling_interval_s": 0.2, "visibility_timeout_s": 0.5, **(host or {})})
        local.start()
        started.append((local, storage))
        return LocalStack(harness, values, local, storage)

    try:
        yield factory
    finally:
        for local, storage in reversed(started):
            local.stop()
            storage.close()
