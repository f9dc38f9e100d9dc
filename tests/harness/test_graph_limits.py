"""Exchange's limits on the fake Graph: MaxSendSize and the 150 MB ceiling (mid-upload and at submission),
recipients per message and per rolling day (accepted, then an NDR), with a real httpx client over TLS.

Limits are made tiny through the scenario so that each test moves a few megabytes at most.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.graph_limits import RecipientBudget, encoded_size, message_size
from harness.up import Harness
from shared import catalog
from tests.harness.test_graph_fake import SEND_URL, SENDER, _put_range, assert_graph_error, message

MIB = 1024 * 1024


@pytest.fixture
def anonymous(harness: Harness) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(harness.ca_bundle)), timeout=10) as http:
        yield http


def _to(n: int) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": f"r{i}@fabrikam.example"}} for i in range(n)]


def _ndrs(harness: Harness) -> list[tuple[str | int, str]]:
    return [(r.status, r.detail) for r in harness.runtime.state.requests(service="graph") if r.operation == "ndr"]


def _start_upload(client: httpx.Client, size: int) -> tuple[str, str]:
    draft = client.post(f"/v1.0/users/{SENDER}/messages", json=message(subject="big"))
    assert draft.status_code == 201, draft.text
    draft_id = draft.json()["id"]
    session = client.post(
        f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}},
    )
    assert session.status_code == 201, session.text
    return draft_id, session.json()["uploadUrl"]


# -- the size rule ---------------------------------------------------------------------------------------


def test_size_counts_attachments_base64_encoded() -> None:
    assert encoded_size(0) == 0
    assert encoded_size(1) == encoded_size(3) == 4
    assert encoded_size(3 * MIB) == 4 * MIB
    body = {"subject": "é", "body": {"contentType": "Text", "content": "abc"}}
    assert message_size(body, [3, 6]) == 2 + 3 + 4 + 8
    # The largest attachment a 35 MB MaxSendSize takes is ~26 MB, not 35 (Exchange counts the MIME size).
    assert message_size({}, [27 * MIB]) > 35 * MIB >= message_size({}, [26 * MIB])


def test_recipient_budget_is_a_rolling_window() -> None:
    now = [1000.0]
    budget = RecipientBudget(10, 60.0, clock=lambda: now[0])
    assert budget.take("Sender@x", 6)
    assert not budget.take("sender@x", 5)  # nothing counted for a refused message
    assert budget.take("sender@x", 4)
    assert budget.take("other@x", 10)
    now[0] += 61.0
    assert budget.take("sender@x", 10)


# -- size ------------------------------------------------------------------------------------------------


def test_upload_fails_at_the_put_that_passes_max_send_size(
    harness: Harness, client: httpx.Client, anonymous: httpx.Client
) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 5 * MIB}}})
    content = b"\7" * (9 * MIB // 2)  # 4.5 MiB: 6 MiB encoded
    _, upload_url = _start_upload(client, len(content))
    first = _put_range(anonymous, upload_url, content, 0, 2 * MIB)  # 2.7 MiB encoded: fits
    assert first.status_code == 200, first.text
    second = _put_range(anonymous, upload_url, content, 2 * MIB, 4 * MIB)  # 5.3 MiB encoded: over
    error = assert_graph_error(second, "graph.message_size_exceeded")
    assert "innerError" not in error  # the upload URL is Outlook REST ([obs] microsoft-graph-docs-contrib#2561)
    assert harness.deliveries() == []


def test_the_150_mb_ceiling_applies_above_a_larger_max_send_size(
    harness: Harness, client: httpx.Client, anonymous: httpx.Client
) -> None:
    harness.apply_scenario({
        "mailboxes": {SENDER: {"max_send_bytes": 200 * MIB}},
        "limits": {"graph": {"max_message_bytes": 4 * MIB}},
    })
    content = b"\7" * (4 * MIB)
    _, upload_url = _start_upload(client, len(content))
    assert _put_range(anonymous, upload_url, content, 0, 2 * MIB).status_code == 200
    assert_graph_error(_put_range(anonymous, upload_url, content, 2 * MIB, 4 * MIB), "graph.message_size_exceeded")


def test_within_the_limit_the_same_upload_is_sent(
    harness: Harness, client: httpx.Client, anonymous: httpx.Client
) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 7 * MIB}}})
    content = b"\7" * (9 * MIB // 2)
    draft_id, upload_url = _start_upload(client, len(content))
    assert _put_range(anonymous, upload_url, content, 0, 2 * MIB).status_code == 200
    assert _put_range(anonymous, upload_url, content, 2 * MIB, 4 * MIB).status_code == 200
    assert _put_range(anonymous, upload_url, content, 4 * MIB, len(content)).status_code == 201
    assert client.post(f"/v1.0/users/{SENDER}/messages/{draft_id}/send").status_code == 202
    assert len(harness.deliveries()) == 1


def test_send_mail_over_max_send_size_is_refused_at_submission(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 2000}}})
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.bin",
        "contentBytes": base64.b64encode(b"\0" * 1500).decode(),
    }
    response = client.post(SEND_URL, json={"message": message(attachments=[attachment])})
    error = assert_graph_error(response, "graph.submit_message_size_exceeded")
    assert error["innerError"]["request-id"]
    assert harness.deliveries() == []
    small = client.post(SEND_URL, json={"message": message()})
    assert small.status_code == 202


def test_draft_send_counts_posted_attachments(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"max_send_bytes": 2000}}})
    draft_id = client.post(f"/v1.0/users/{SENDER}/messages", json=message()).json()["id"]
    posted = client.post(
        f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments",
        json={"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin",
              "contentBytes": base64.b64encode(b"\0" * 1500).decode()},
    )
    assert posted.status_code == 201
    sent = client.post(f"/v1.0/users/{SENDER}/messages/{draft_id}/send")
    assert_graph_error(sent, "graph.submit_message_size_exceeded")
    assert harness.deliveries() == []


# -- recipients ------------------------------------------------------------------------------------------


def test_too_many_recipients_is_accepted_then_answered_with_an_ndr(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"recipients_per_message": 3}}})
    body = message(toRecipients=_to(3), ccRecipients=[], bccRecipients=_to(1))  # r0 twice: 3 distinct
    assert client.post(SEND_URL, json={"message": body}).status_code == 202
    assert len(harness.deliveries()) == 1
    over = message(toRecipients=_to(4), ccRecipients=[], bccRecipients=[])
    response = client.post(SEND_URL, json={"message": over})
    assert response.status_code == 202  # Exchange takes the submission; the NDR comes afterwards
    assert response.content == b""
    assert len(harness.deliveries()) == 1
    entry = catalog.entry("smtp.ndr_too_many_recipients")
    assert _ndrs(harness) == [("5.5.3", f"sendMail: 550 5.5.3 {entry.text}")]
    listed = client.get(f"/v1.0/users/{SENDER}/mailFolders/sentitems/messages").json()["value"]
    assert len(listed) == 1


def test_daily_recipient_limit_per_mailbox(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"recipients_per_day": 5}}})
    three = message(toRecipients=_to(3), ccRecipients=[], bccRecipients=[])
    assert client.post(SEND_URL, json={"message": three}).status_code == 202
    assert client.post(SEND_URL, json={"message": three}).status_code == 202  # 6 > 5: NDR
    two = message(toRecipients=_to(2), ccRecipients=[], bccRecipients=[])
    draft_id = client.post(f"/v1.0/users/{SENDER}/messages", json=two).json()["id"]
    assert client.post(f"/v1.0/users/{SENDER}/messages/{draft_id}/send").status_code == 202  # 3 + 2 fits
    assert client.post(SEND_URL, json={"message": two}).status_code == 202  # 7 > 5: NDR
    assert [len(d.recipients) for d in harness.deliveries()] == [3, 2]
    entry = catalog.entry("smtp.ndr_daily_recipient_limit")
    assert [status for status, _ in _ndrs(harness)] == ["5.1.90", "5.1.90"]
    assert all(entry.text in detail for _, detail in _ndrs(harness))
    other = client.post("/v1.0/users/noreply@contoso.example/sendMail", json={"message": three})
    assert other.status_code == 202
    assert len(harness.deliveries(mailbox="noreply@contoso.example")) == 1  # each mailbox has its own budget
