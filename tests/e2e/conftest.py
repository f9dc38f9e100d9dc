"""End-to-end fixtures: the session harness + Azurite, and a local Functions host per test.

Each test gets its own queue, poison queue, status table and attachment container (unique names), and
a fresh in-process local host over the real ``function_app`` (indexed through ``main.py`` as the worker
does), so tests do not see each other's messages and share only the expensive servers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError

from harness.azurite import Azurite
from harness.localhost import LocalHost
from harness.up import Harness
from shared.storage.status import StatusRow, StatusStore
from tests.functions.openapi_support import check_response
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SENDER = "sender@contoso.example"
NOREPLY = "noreply@contoso.example"
OTHER = "other@contoso.example"

# Fast time: every delay the pipeline and the host use is a setting.
FAST_SETTINGS = {
    "OUTBOX_BACKOFF_BASE_S": "1",
    "OUTBOX_BACKOFF_MAX_S": "2",
    "OUTBOX_RETRY_AFTER_MAX_S": "10",
    "OUTBOX_MAX_ATTEMPTS": "4",
    "OUTBOX_LEASE_S": "5",
    "OUTBOX_HTTP_TIMEOUT_S": "5",
    "OUTBOX_SMTP_TIMEOUT_S": "5",
    "OUTBOX_PACING_MAX_WAIT_S": "0.5",
    "OUTBOX_LOOKUP_SETTLE_S": "0",
}
FAST_HOST = {"max_polling_interval_s": 0.2, "visibility_timeout_s": 1.0}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def mail(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": SENDER, "to": ["alice@fabrikam.example"], "subject": "Hello", "text": "Hi"}
    body.update(fields)
    return body


class Stack:
    """A running local host wired to the harness and Azurite, with helpers that await outcomes."""

    def __init__(self, harness: Harness, azurite: Azurite, values: dict[str, str], host: LocalHost) -> None:
        self.harness = harness
        self.azurite = azurite
        self.values = values
        self.host = host
        from azure.storage.queue import QueueServiceClient

        self.queue_service = QueueServiceClient.from_connection_string(azurite.connection_string)
        self.queue = self.queue_service.get_queue_client(values["OUTBOX_QUEUE"])
        self.poison_queue = self.queue_service.get_queue_client(values["OUTBOX_QUEUE"] + "-poison")
        from azure.data.tables import TableServiceClient

        self.status = StatusStore(TableServiceClient.from_connection_string(azurite.connection_string),
                                  values["OUTBOX_STATUS_TABLE"])

    # -- producing ----------------------------------------------------------------------------------
    def enqueue(self, body: dict[str, Any] | str, *, base64_encode: bool = False) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        if base64_encode:
            text = base64.b64encode(text.encode()).decode()
        return str(self.queue.send_message(text).id)

    # -- observing ----------------------------------------------------------------------------------
    def row(self, message_id: str) -> StatusRow | None:
        return self.status.get(message_id)

    def wait_state(self, message_id: str, *states: str, timeout: float = 60.0) -> StatusRow:
        found: list[StatusRow] = []

        def reached() -> bool:
            row = self.status.get(message_id)
            if row is not None and row.state in states:
                found.append(row)
                return True
            return False

        if not self.host.wait_until(reached, timeout, poll_s=0.1):
            row = self.status.get(message_id)
            raise AssertionError(f"{message_id}: state {row.state if row else None!r}, wanted {states}; "
                                 f"host errors: {self.host.stats.errors[-3:]}")
        return found[-1]

    def poison(self, *, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any] | str]:
        """Wait for ``count`` poison messages and return them (envelopes parsed, host copies as text)."""
        got: list[Any] = []

        def enough() -> bool:
            try:
                batch = list(self.poison_queue.receive_messages(max_messages=32, visibility_timeout=60))
            except Exception:  # the poison queue does not exist until the first poison
                batch = []
            for m in batch:
                self.poison_queue.delete_message(m)
                try:
                    got.append(json.loads(m.content))
                except ValueError:
                    got.append(m.content)
            return len(got) >= count

        wait_until(enough, timeout, sleep=lambda s: self.host.wait_until(lambda: False, s),
                   message=lambda: f"{len(got)} of {count} poison messages after {timeout} s")
        return got

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until the work queue is empty (including delayed messages) and nothing runs."""
        def idle() -> bool:
            props = self.queue.get_queue_properties()
            return props.approximate_message_count == 0 and self.host.in_flight == 0

        assert self.host.wait_until(idle, timeout, poll_s=0.1), "queue did not drain"


def call(stack: Stack, method: str, path: str, body: Any = None, *, key: str | None = "test-key",
         raw: bytes | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One request; every answer is checked against docs/openapi.yaml (status documented, body valid)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["x-functions-key"] = key
    req = urllib.request.Request(f"{stack.host.base_url}/api/{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, answer_headers, text = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, text = exc.code, dict(exc.headers), exc.read()
    answer = json.loads(text) if text else {}
    template = "/messages/{id}" if path.startswith("messages/") else "/" + path.split("?", 1)[0]
    check_response(template, method, status, answer, answer_headers)
    return status, answer_headers, answer


@pytest.fixture
def stack_factory(harness: Harness, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Stack]]:
    started: list[LocalHost] = []
    # The local host, like Core Tools, lets the environment win over local.settings.json: make sure nothing
    # left in this process's environment shadows the test's settings (CA variables excepted: outbox passes
    # OUTBOX_CA_BUNDLE explicitly and never relies on them).
    import os

    for key in list(os.environ):
        if key.startswith(("OUTBOX_", "IDENTITY_", "AzureWebJobs", "PYTHON_SCRIPT_FILE_NAME")) or key == "AZURE_CLIENT_ID":
            monkeypatch.delenv(key)

    def factory(*, settings: dict[str, str] | None = None, host: dict[str, Any] | None = None,
                threads: int | None = None, storage: Azurite | None = None) -> Stack:
        """``storage``: an emulator of the test's own (one it may stall) instead of the session's."""
        emulator = storage or azurite
        values = harness.settings_values()
        values.update(FAST_SETTINGS)
        values.update({
            "AzureWebJobsStorage": emulator.connection_string,
            "OUTBOX_QUEUE": unique("e2e-"),
            "OUTBOX_STATUS_TABLE": unique("e2e"),
            "OUTBOX_ATTACHMENTS_CONTAINER": unique("att-"),
        })
        values.update(settings or {})
        local = LocalHost(app_root=ROOT, values=values, queue_overrides={**FAST_HOST, **(host or {})}, http_port=0,
                          function_key="test-key", thread_count=threads)
        stack = Stack(harness, emulator, values, local)
        with contextlib.suppress(ResourceExistsError):  # an SDK retry under load may find it created
            stack.queue.create_queue()
        local.start()
        started.append(local)
        return stack

    try:
        yield factory
    finally:
        for local in reversed(started):
            local.stop()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()
