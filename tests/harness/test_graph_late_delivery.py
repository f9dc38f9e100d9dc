"""The fake Graph's backend after an ambiguous send (a 504 or a dropped answer): it holds the mailbox's
concurrency slot, delivers late with the message in Drafts meanwhile, then Sent Items; or never delivers.

A real httpx client over TLS; every delay is a scenario setting or fault param of a second or less, and
every wait is on an event (a delivery, the slot freeing), never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from harness.up import Harness
from tests.harness.test_graph_fake import SEND_URL, SENDER, SENT_ITEMS, assert_graph_error, message

DRAFTS = f"/v1.0/users/{SENDER}/mailFolders/drafts/messages"


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def _find(client: httpx.Client, folder: str, imid: str) -> list[dict[str, object]]:
    found = client.get(folder, params={"$filter": f"internetMessageId eq '{imid}'", "$select": "id,isDraft"})
    assert found.status_code == 200, found.text
    return list(found.json()["value"])


def test_a_504_that_delivers_late_sits_in_drafts_then_sent_items(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"exchange": {"ambiguous_delivery_delay_s": 0.6, "sent_items_delay_s": 0.4}})
    harness.set_fault(service="graph", operation="sendMail", catalog="graph.gateway_timeout", times=1,
                      params={"delivered": "true"})
    imid = "<late-1@contoso.example>"
    response = client.post(SEND_URL, json={"message": message(internetMessageId=imid)})
    assert_graph_error(response, "graph.gateway_timeout")
    # Answered, not yet delivered: the message is in Drafts, not in Sent Items.
    assert harness.deliveries(transport="graph") == []
    [draft] = _find(client, DRAFTS, imid)
    assert draft["isDraft"] is True
    assert _find(client, SENT_ITEMS, imid) == []

    [delivery] = harness.wait_for_deliveries(1, timeout=10, transport="graph")
    assert delivery.message_id == imid
    assert _find(client, DRAFTS, imid) == []  # moved out of Drafts at delivery
    _until(lambda: bool(_find(client, SENT_ITEMS, imid)))  # and into Sent Items sent_items_delay_s later
    assert len(harness.deliveries(transport="graph")) == 1


def test_the_held_slot_answers_a_quick_resend_429_mailbox_concurrency(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"concurrency": 1}}})
    harness.set_fault(service="graph", operation="sendMail", catalog="graph.gateway_timeout", times=1,
                      params={"delivered": "true", "hold_s": "0.8", "deliver_after_s": "0.3"})
    body = {"message": message(internetMessageId="<held@contoso.example>")}
    assert_graph_error(client.post(SEND_URL, json=body), "graph.gateway_timeout")
    # The backend still works on the first send: the mailbox's only slot is taken.
    busy = client.post(SEND_URL, json=body)
    error = assert_graph_error(busy, "graph.mailbox_concurrency")
    assert error["code"] == "ApplicationThrottled" and busy.headers["Retry-After"]
    assert len(harness.wait_for_deliveries(1, timeout=10, transport="graph")) == 1

    def accepted() -> bool:
        return client.post(SEND_URL, json={"message": message(subject="later")}).status_code == 202

    _until(accepted)  # the slot frees once the hold ends
    assert [d.subject for d in harness.deliveries(transport="graph")] == ["Invoice 42", "later"]


def test_a_dropped_answer_that_never_delivers_leaves_nothing_behind(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"exchange": {"ambiguous_delivery_delay_s": 0.3, "ambiguous_hold_s": 0.3}})
    harness.set_fault(service="graph", operation="sendMail", action="drop_after_body", times=1,
                      params={"delivered": "false"})
    imid = "<never@contoso.example>"
    with pytest.raises(httpx.HTTPError):
        client.post(SEND_URL, json={"message": message(internetMessageId=imid)})
    assert _find(client, DRAFTS, imid) == []
    with pytest.raises(TimeoutError):
        harness.wait_for_deliveries(1, timeout=1.0, transport="graph")


def _draft(client: httpx.Client, imid: str) -> str:
    created = client.post(f"/v1.0/users/{SENDER}/messages", json=message(internetMessageId=imid))
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_a_draft_being_sent_is_sent_once_whatever_is_resent(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"exchange": {"ambiguous_delivery_delay_s": 0.5}})
    harness.set_fault(service="graph", operation="send", catalog="graph.gateway_timeout", times=1,
                      params={"delivered": "true"})
    imid = "<large-1@contoso.example>"
    draft_id = _draft(client, imid)
    send = f"/v1.0/users/{SENDER}/messages/{draft_id}/send"
    assert_graph_error(client.post(send), "graph.gateway_timeout")
    assert [d["id"] for d in _find(client, DRAFTS, imid)] == [draft_id]
    assert client.post(send).status_code == 202  # the same item again: it is already on its way
    assert client.delete(f"/v1.0/users/{SENDER}/messages/{draft_id}").status_code == 204  # too late to stop
    harness.wait_for_deliveries(1, timeout=10, transport="graph")
    with pytest.raises(TimeoutError):
        harness.wait_for_deliveries(2, timeout=1.0, transport="graph")
    assert _find(client, DRAFTS, imid) == []


def test_a_504_on_send_without_delivery_leaves_the_draft_to_send_again(harness: Harness, client: httpx.Client) -> None:
    harness.set_fault(service="graph", operation="send", catalog="graph.gateway_timeout", times=1)
    imid = "<large-2@contoso.example>"
    draft_id = _draft(client, imid)
    send = f"/v1.0/users/{SENDER}/messages/{draft_id}/send"
    assert_graph_error(client.post(send), "graph.gateway_timeout")
    assert [d["id"] for d in _find(client, DRAFTS, imid)] == [draft_id]  # not sent: still a draft
    assert client.post(send).status_code == 202
    [delivery] = harness.wait_for_deliveries(1, timeout=10, transport="graph")
    assert delivery.message_id == imid and _find(client, DRAFTS, imid) == []


def test_deleting_a_draft_removes_it(client: httpx.Client) -> None:
    imid = "<gone@contoso.example>"
    draft_id = _draft(client, imid)
    assert client.delete(f"/v1.0/users/{SENDER}/messages/{draft_id}").status_code == 204
    assert _find(client, DRAFTS, imid) == []
    assert_graph_error(client.delete(f"/v1.0/users/{SENDER}/messages/{draft_id}"), "graph.item_not_found")


def test_negative_delays_are_refused(harness: Harness) -> None:
    from harness.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"exchange\.ambiguous_hold_s"):
        harness.scenario.with_changes({"exchange": {"ambiguous_hold_s": -1}})
