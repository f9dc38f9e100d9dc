"""Fixtures for the CLI tests: the harness, Azurite, and the CLI run in-process as an operator runs it.

Each test gets its own queue and status table names, so tests sharing the session Azurite never see
each other's messages. The CLI reads a KEY=VALUE settings file written like the harness's
``.state/outbox.env``, so the same path (settings file -> platform environment -> SDKs) is exercised.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.cli.main import main

FAST = {
    "OUTBOX_HTTP_TIMEOUT_S": "5",
    "OUTBOX_SMTP_TIMEOUT_S": "5",
    "OUTBOX_PACING_MAX_WAIT_S": "0.5",
    "OUTBOX_BACKOFF_BASE_S": "1",
    "OUTBOX_BACKOFF_MAX_S": "2",
}
SENDER = "sender@contoso.example"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    """Writes the settings file on demand (after a scenario change) and runs ``outbox`` in-process."""

    harness: Any
    azurite: Any
    directory: Path
    queue: str
    table: str
    overrides: dict[str, str]

    @property
    def settings_file(self) -> Path:
        return self.directory / "outbox.env"

    def values(self) -> dict[str, str]:
        values = dict(self.harness.settings_values())
        values.update(FAST)
        values.update(
            {
                "AzureWebJobsStorage": self.azurite.connection_string,
                "OUTBOX_QUEUE": self.queue,
                "OUTBOX_STATUS_TABLE": self.table,
            }
        )
        values.update(self.overrides)
        return values

    def write_settings(self) -> Path:
        text = "".join(f"{key}={value}\n" for key, value in self.values().items())
        self.settings_file.write_text(text, encoding="utf-8")
        return self.settings_file

    def __call__(self, *argv: str, stdin: str = "") -> Result:
        self.write_settings()
        out, err = io.StringIO(), io.StringIO()
        code = main(["--settings", str(self.settings_file), *argv], stdout=out, stderr=err,
                     stdin=io.StringIO(stdin))
        return Result(code, out.getvalue(), err.getvalue())

    def settings(self) -> Any:
        from shared.settings import load_settings

        return load_settings(self.values())

    def queue_client(self, name: str | None = None) -> Any:
        from azure.storage.queue import QueueServiceClient

        service = QueueServiceClient.from_connection_string(self.azurite.connection_string)
        return service.get_queue_client(name or self.queue)


@pytest.fixture
def cli(harness: Any, azurite: Any, tmp_path: Path) -> Iterator[Cli]:
    tag = uuid.uuid4().hex[:12]
    yield Cli(harness, azurite, tmp_path, queue=f"cli-{tag}", table=f"cli{tag}", overrides={})


@pytest.fixture
def doctor_json(cli: Cli) -> Callable[..., tuple[int, dict[str, Any]]]:
    def run(*argv: str) -> tuple[int, dict[str, Any]]:
        result = cli("doctor", "--json", *argv)
        return result.code, result.json

    return run
