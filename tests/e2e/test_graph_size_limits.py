"""A message too large for its mailbox, through the whole pipeline: poisoned once with category size, whether
outbox knows the limit (refused before any Graph request) or not (Exchange's mid-upload refusal)."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.conftest import SENDER, Stack, mail

MiB = 1024 * 1024


def _upload(stack: Stack, name: str, size: int) -> str:
    from azure.storage.blob import BlobServiceClient

    container = stack.values["OUTBOX_ATTACHMENTS_CONTAINER"]
    service = BlobServiceClient.from_connection_string(stack.azurite.connection_string)
    if not service.get_container_client(container).exists():
        service.create_container(container)
    service.get_blob_client(container, name).upload_blob(b"\5" * size)
    return f"{container}/{name}"


def test_over_the_configured_max_send_size_is_poisoned_before_any_graph_request(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(settings={"OUTBOX_MAX_SEND_BYTES": str(MiB)})
    ref = _upload(stack, "reports/big.bin", MiB)  # 1.33 MiB as Exchange counts it
    stack.enqueue(mail(id="size-known", attachments=[{"name": "big.bin", "blob": ref}]))
    [env] = stack.poison(timeout=30)
    assert isinstance(env, dict) and env["attempts"] == 1
    error = env["error"]
    assert (error["category"], error["code"], error["retryable"]) == ("size", "outbox.message_too_large", False)
    assert f"of {MiB:,} bytes" in error["detail"] and "MaxSendSize" in error["detail"]
    row = stack.wait_state("size-known", "poisoned")
    assert row.last_category == "size"
    graph = [r.operation for r in stack.harness.state.requests(service="graph")]
    assert graph == []
    assert stack.harness.deliveries() == []


def test_with_the_limit_unknown_the_mid_upload_refusal_poisons_once(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_MAX_SEND_BYTES": "0", "OUTBOX_UPLOAD_CHUNK_BYTES": str(2 * MiB)})
    stack.harness.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 5 * MiB}}})
    ref = _upload(stack, "reports/big.bin", 9 * MiB // 2)  # 6 MiB as Exchange counts it
    stack.enqueue(mail(id="size-unknown", attachments=[{"name": "big.bin", "blob": ref}]))
    [env] = stack.poison(timeout=60)
    assert isinstance(env, dict) and env["attempts"] == 1
    error = env["error"]
    assert (error["category"], error["code"], error["status"]) == ("size", "ErrorMessageSizeExceeded", 400)
    assert "MaxSendSize" in error["hint"]
    puts = [r.status for r in stack.harness.state.requests(service="graph") if r.operation.startswith("PUT")]
    assert puts == [200, 400]  # one attempt: the upload stopped where Exchange refused it
    assert stack.harness.deliveries() == []
