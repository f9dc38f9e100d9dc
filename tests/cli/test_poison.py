"""``outbox poison`` and ``outbox status``: triage, show, requeue (ids kept, nothing sent twice), purge."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from shared.errors import OutboxError
from shared.storage.queues import poison_envelope
from tests.cli.conftest import SENDER
from tests.waiting import wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def v1(message_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": message_id, "from": SENDER, "to": ["ann@fabrikam.example"], "subject": f"About {message_id}",
            "text": "Hello", **fields}


def put_envelope(cli: Any, message_id: str, category: str = "recipient", code: str = "ErrorInvalidRecipients",
                 hint: str = "fix the recipients", **fields: Any) -> dict[str, Any]:
    error = OutboxError(category, code, status=400, transport="graph", detail=f"400 {code}", hint=hint)
    envelope = poison_envelope(v1(message_id, **fields), error, attempts=1, first_seen=None, message_id=message_id)
    poison = cli.queue_client(cli.queue + "-poison")
    _ensure(poison)
    poison.send_message(json.dumps(envelope))
    return envelope


def _ensure(client: Any) -> None:
    from azure.core.exceptions import ResourceExistsError

    with contextlib.suppress(ResourceExistsError):
        client.create_queue()


def visible_count(client: Any) -> int:
    """Messages a consumer would get right now (received and then given back)."""
    got = []
    while True:
        batch = list(client.receive_messages(max_messages=32, visibility_timeout=5))
        if not batch:
            break
        got.extend(batch)
    for message in got:
        client.update_message(message, visibility_timeout=0)
    return len(got)


# -- the whole round trip through the real function (local host) ------------------------------------------


@pytest.fixture
def local_host(cli: Any) -> Any:
    from harness.localhost import LocalHost

    values = {**cli.values(), "OUTBOX_API_KEY": "test-key"}
    cli.overrides["OUTBOX_API_KEY"] = "test-key"
    host = LocalHost(app_root=PROJECT_ROOT, values=values, http_port=0, function_key="test-key",
                     queue_overrides={"max_polling_interval_s": 0.2, "visibility_timeout_s": 0.5})
    with host:
        cli.overrides["OUTBOX_API_URL"] = host.base_url
        yield host


def wait_for_state(cli: Any, message_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        result = cli("status", message_id, "--json")
        if result.code == 0:
            last = result.json
        return last if last.get("state") == state else None

    return wait_until(reached, timeout, message=lambda: f"{message_id} never reached {state}; last status {last}")


def test_poisoned_message_requeued_after_the_fix_is_delivered_once(cli: Any, local_host: Any) -> None:
    harness = cli.harness
    harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})

    sent = cli("send", "--via", "api", "--from", SENDER, "--to", "ann@fabrikam.example", "--subject", "Invoice 7",
               "--text", "Please pay", "--transport", "smtp", "--id", "invoice-7")
    assert sent.code == 0, sent.err
    row = wait_for_state(cli, "invoice-7", "poisoned")
    assert row["lastError"]["category"] == "permission"

    listing = cli("poison", "list", "--json")
    assert listing.code == 0
    (group,) = listing.json["groups"]
    assert (group["category"], group["mailbox"], group["count"], group["ids"]) == (
        "permission", SENDER, 1, ["invoice-7"])
    assert "Set-CASMailbox" in group["hint"]
    human = cli("poison", "list")
    assert f"outbox poison requeue --category permission --mailbox {SENDER}" in human.out

    shown = cli("poison", "show", "invoice-7", "--json")
    assert shown.code == 0
    envelope = shown.json["envelope"]
    assert envelope["schema"] == "outbox.poison/1"
    assert envelope["message"]["id"] == "invoice-7" and envelope["message"]["subject"] == "Invoice 7"

    harness.reset()  # the email team re-enables SMTP AUTH for the mailbox
    requeued = cli("poison", "requeue", "--category", "permission", "--mailbox", SENDER, "--json")
    assert requeued.code == 0, requeued.err
    assert [r["id"] for r in requeued.json["requeued"]] == ["invoice-7"]

    wait_for_state(cli, "invoice-7", "sent")
    (delivery,) = harness.wait_for_deliveries(1, transport="smtp")
    assert delivery.subject == "Invoice 7"
    assert cli("poison", "list", "--json").json["count"] == 0

    # A stray copy of the envelope (e.g. written twice) is never sent again: the status row says sent.
    put_envelope(cli, "invoice-7", category="permission", code="5.7.139")
    again = cli("poison", "requeue", "invoice-7")
    assert again.code == 1
    assert "already sent" in again.out
    local_host.wait_until(lambda: False, timeout=1.0)  # give the host a chance to (wrongly) send
    assert len(harness.deliveries()) == 1


# -- listing, showing, selecting --------------------------------------------------------------------------


def test_list_groups_by_category_and_mailbox_with_the_hint(cli: Any) -> None:
    put_envelope(cli, "r-1")
    put_envelope(cli, "r-2")
    put_envelope(cli, "q-1", category="quota", code="ErrorExceededMessageLimit", hint="pause the mailbox",
                 **{"from": "noreply@contoso.example"})

    result = cli("poison", "list", "--messages")

    assert result.code == 0
    assert "3 messages in 2 groups" in result.out
    lines = result.out.splitlines()
    first = next(line for line in lines if line.strip().startswith("1 "))
    assert "recipient" in first and SENDER in first and " 2 " in first
    assert "fix the recipients" in result.out and "pause the mailbox" in result.out
    assert "About r-1" in result.out  # --messages lists subjects


def test_listing_more_than_a_peek_leaves_every_message_visible(cli: Any) -> None:
    for n in range(40):
        put_envelope(cli, f"many-{n}")

    result = cli("poison", "list", "--json")

    assert result.json["count"] == 40
    assert visible_count(cli.queue_client(cli.queue + "-poison")) == 40


def test_host_moved_raw_messages_are_shown_and_requeued_as_they_were(cli: Any) -> None:
    poison = cli.queue_client(cli.queue + "-poison")
    _ensure(poison)
    raw = base64.b64encode(json.dumps(v1("raw-1")).encode()).decode()
    poison.send_message(raw)
    poison.send_message("this is not json at all")

    listing = cli("poison", "list", "--json").json
    groups = {(g["category"], g["mailbox"]): g for g in listing["groups"]}
    assert set(groups) == {("host-moved", SENDER), ("host-moved", None)}
    assert "maxDequeueCount" in groups[("host-moved", SENDER)]["hint"]

    shown = cli("poison", "show", "raw-1")
    assert shown.code == 0
    assert "moved to" in shown.out and "by the Functions host" in shown.out
    assert raw in shown.out

    requeued = cli("poison", "requeue", "raw-1")
    assert requeued.code == 0, requeued.out + requeued.err
    (back,) = cli.queue_client().peek_messages(max_messages=5)
    assert back.content == raw  # byte for byte: the function decodes base64 itself
    assert cli("poison", "list", "--json").json["count"] == 1


def test_requeue_resets_the_status_row_and_keeps_the_id(cli: Any) -> None:
    from shared.storage import build_stores

    store = build_stores(cli.settings()).status
    error = OutboxError("auth", "5.7.3", transport="smtp", detail="535 5.7.3")
    store.claim("keep-1", owner="q1", lease_s=30, transport="smtp", mailbox=SENDER)
    store.mark_poisoned("keep-1", error=error, attempts=3)
    put_envelope(cli, "keep-1", category="auth", code="5.7.3")

    result = cli("poison", "requeue", "keep-1")

    assert result.code == 0
    row = store.get("keep-1")
    assert (row.state, row.attempts) == ("queued", 0)
    (back,) = cli.queue_client().peek_messages(max_messages=5)
    assert json.loads(back.content)["id"] == "keep-1"


def test_invalid_messages_are_not_requeued(cli: Any) -> None:
    put_envelope(cli, "bad-1", category="invalid_message", code="invalid_message", hint="fix the producer")

    result = cli("poison", "requeue", "--all", "--json")

    assert result.code == 1
    assert result.json["requeued"] == []
    assert "would fail again" in result.json["skipped"][0]["reason"]
    assert visible_count(cli.queue_client(cli.queue + "-poison")) == 1


def test_requeue_needs_a_selection_and_reports_unknown_ids(cli: Any) -> None:
    put_envelope(cli, "x-1")

    assert cli("poison", "requeue").code == 2
    missing = cli("poison", "requeue", "no-such-id")
    assert missing.code == 4
    assert "no poison message matches id no-such-id" in missing.err
    assert cli("poison", "show", "no-such-id").code == 4


def test_purge_asks_first(cli: Any) -> None:
    put_envelope(cli, "p-1")
    put_envelope(cli, "p-2", category="quota", code="ErrorExceededMessageLimit")
    poison = cli.queue_client(cli.queue + "-poison")

    declined = cli("poison", "purge", "--category", "recipient", stdin="n\n")
    assert declined.code == 1
    assert "Delete 1 message (category recipient)" in declined.err
    assert visible_count(poison) == 2

    accepted = cli("poison", "purge", "--category", "recipient", stdin="y\n")
    assert accepted.code == 0
    assert visible_count(poison) == 1

    everything = cli("poison", "purge", "--all", "--yes")
    assert everything.code == 0
    assert visible_count(poison) == 0


def test_status_of_an_unknown_id_exits_4(cli: Any) -> None:
    result = cli("status", "never-seen")

    assert result.code == 4
    assert "no message with id 'never-seen'" in result.err


def test_an_original_parked_in_blob_storage_is_requeued_from_there_and_purged_with_it(cli: Any) -> None:
    from azure.storage.blob import BlobServiceClient

    from shared.storage import build_stores

    settings = cli.settings()
    store = build_stores(settings).queues
    error = OutboxError("transient", "ErrorServerBusy", status=503, transport="graph", detail="busy", hint="later")
    envelope = poison_envelope(v1("parked-1"), error, attempts=8, first_seen=None, message_id="parked-1")
    ref = store.store_blob("poison/parked-1/test.json", json.dumps(envelope["message"]).encode())
    envelope = {**envelope, "message": None, "messageBlob": ref, "id": "parked-1"}  # as QueueStore.poison parks it
    poison = cli.queue_client(cli.queue + "-poison")
    _ensure(poison)
    poison.send_message(json.dumps(envelope))
    put_envelope(cli, "parked-2")

    shown = cli("poison", "show", "parked-1")
    assert f"original in blob  {ref}" in shown.out

    assert cli("poison", "requeue", "parked-1").code == 0
    (back,) = cli.queue_client().peek_messages(max_messages=5)
    assert json.loads(back.content) == v1("parked-1")

    poison.send_message(json.dumps(envelope))
    assert cli("poison", "purge", "parked-1", "--yes").code == 0
    container, _, name = ref.partition("/")
    blobs = BlobServiceClient.from_connection_string(cli.azurite.connection_string).get_container_client(container)
    assert name not in {b.name for b in blobs.list_blobs(name_starts_with="poison/parked-1/")}
    assert visible_count(poison) == 1
