"""shared.runtime: the one builder of the pipeline and its parts (Functions app and CLI)."""

from __future__ import annotations

import pytest

from harness.azurite import Azurite
from shared.runtime import build_runtime
from shared.settings import load_settings
from shared.storage import StorageOptions
from tests.unit.test_pipeline_support import message, unique


@pytest.fixture
def settings(azurite: Azurite) -> object:
    return load_settings({
        "AzureWebJobsStorage": azurite.connection_string, "OUTBOX_QUEUE": unique("rt"),
        "OUTBOX_STATUS_TABLE": unique("rt"), "OUTBOX_ALLOWED_SENDERS": "*@contoso.example",
    })


def test_without_sending_it_builds_no_transports_and_still_enqueues(settings: object) -> None:
    with build_runtime(settings, sending=False) as runtime:
        assert runtime.senders is None and runtime.blobs is None
        done = runtime.pipeline.enqueue(message(id="rt-1"))
        assert done.message_id == "rt-1" and done.row.state == "queued"


def test_with_sending_every_part_is_built_and_closed(settings: object) -> None:
    runtime = build_runtime(settings, storage=StorageOptions({"retry_total": 0}, {"retry_total": 0}))
    assert runtime.senders is not None and runtime.blobs is not None
    assert runtime.pipeline.senders is runtime.senders and runtime.pipeline.status is runtime.status
    runtime.close()
    with pytest.raises(RuntimeError, match="closed"):
        runtime.senders.transport("graph")
