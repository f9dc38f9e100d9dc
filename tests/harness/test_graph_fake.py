"""Contract tests of the fake Graph with a real, unchanged client (httpx, sync, TLS with the test CA).

Every error the fake emulates is compared with ``shared.catalog`` (status, code, exact message), so the
fake and the classifier cannot drift apart.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.graph_errors import OUTLOOK_REST_ENTRIES
from harness.up import Harness
from shared import catalog

SENDER = "sender@contoso.example"
SEND_URL = f"/v1.0/users/{SENDER}/sendMail"
SENT_ITEMS = f"/v1.0/users/{SENDER}/mailFolders/sentitems/messages"


@pytest.fixture
def anonymous(tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A client without Authorization, as the pre-authenticated upload URL wants."""
    with httpx.Client(verify=tls, timeout=10) as http:
        yield http


def message(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "Invoice 42",
        "body": {"contentType": "Text", "content": "Hello"},
        "toRecipients": [{"emailAddress": {"address": "to@fabrikam.example"}}],
        "ccRecipients": [{"emailAddress": {"address": "cc@fabrikam.example"}}],
        "bccRecipients": [{"emailAddress": {"address": "bcc@fabrikam.example"}}],
    }
    body.update(overrides)
    return body


def assert_graph_error(response: httpx.Response, name: str, **fmt: str) -> dict[str, Any]:
    """Status, code and message exactly as the catalog row says."""
    entry = catalog.entry(name)
    status, code, text = entry.status, entry.code, entry.render(**fmt)
    assert response.status_code == status, response.text
    assert response.headers["request-id"]
    if not code:
        assert response.text == text
        return {}
    error = response.json()["error"]
    assert (error["code"], error["message"]) == (code, text)
    if name not in OUTLOOK_REST_ENTRIES:
        inner = error["innerError"]
        assert inner["request-id"] == response.headers["request-id"]
        assert inner["client-request-id"] == response.headers["client-request-id"]
    return error


# -- sendMail ------------------------------------------------------------------------------------------


def test_send_mail_is_accepted_and_recorded(harness: Harness, client: httpx.Client) -> None:
    response = client.post(
        SEND_URL, json={"message": message(), "saveToSentItems": True}, headers={"client-request-id": "c-1"}
    )
    assert response.status_code == 202
    assert response.content == b""
    assert response.headers["client-request-id"] == "c-1"
    [delivery] = harness.deliveries(transport="graph")
    assert delivery.mailbox == SENDER
    assert delivery.app_id == harness.scenario.sender.client_id
    assert delivery.subject == "Invoice 42"
    assert delivery.extra["to"] == ["to@fabrikam.example"]
    assert delivery.extra["cc"] == ["cc@fabrikam.example"]
    assert delivery.extra["bcc"] == ["bcc@fabrikam.example"]
    assert delivery.graph_json is not None and delivery.graph_json["message"]["subject"] == "Invoice 42"
    assert delivery.request_id == response.headers["request-id"]
    assert delivery.saved_to_sent_items


def test_sent_items_lookup_by_internet_message_id(client: httpx.Client) -> None:
    mine = "<outbox.msg-1@contoso.example>"
    assert client.post(SEND_URL, json={"message": message(internetMessageId=mine)}).status_code == 202
    assert client.post(SEND_URL, json={"message": message(subject="other")}).status_code == 202
    not_saved = "<outbox.msg-2@contoso.example>"
    body = {"message": message(internetMessageId=not_saved), "saveToSentItems": False}
    assert client.post(SEND_URL, json=body).status_code == 202

    found = client.get(
        SENT_ITEMS, params={"$filter": f"internetMessageId eq '{mine}'", "$select": "internetMessageId,subject"}
    )
    assert found.status_code == 200
    [item] = found.json()["value"]
    assert item["internetMessageId"] == mine
    assert set(item) == {"id", "internetMessageId", "subject"}

    alias = client.get(
        f"/v1.0/users/{SENDER}/mailFolders('SentItems')/messages",
        params={"$filter": f"internetMessageId eq '{not_saved}'"},
    )
    assert alias.json()["value"] == []

    everything = client.get(SENT_ITEMS, params={"$top": "5"}).json()["value"]
    assert len(everything) == 2
    generated = next(m["internetMessageId"] for m in everything if m["subject"] == "other")
    assert generated.startswith("<") and generated.endswith(">") and "@" in generated


def test_sent_items_need_a_read_role(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph", roles=["Mail.Send"])
    response = client.get(SENT_ITEMS, headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(response, "graph.no_mail_send")


# -- tokens and permissions ------------------------------------------------------------------------------


def test_missing_token(client: httpx.Client) -> None:
    response = client.post(SEND_URL, json={"message": message()}, headers={"Authorization": ""})
    assert_graph_error(response, "graph.token_missing")


def test_smtp_token_on_graph_is_invalid_audience(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("exchange")
    response = client.post(SEND_URL, json={"message": message()}, headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(response, "graph.invalid_audience")


def test_expired_token(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph", now=time.time() - 7200, lifetime_s=3600)
    response = client.post(SEND_URL, json={"message": message()}, headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(response, "graph.token_expired")


def test_token_signed_by_someone_else(client: httpx.Client) -> None:
    from harness.tokens import TokenIssuer

    forged = TokenIssuer().mint_access_token(
        tenant_id="t", client_id="c", object_id="o", audience="https://graph.microsoft.com", roles=["Mail.Send"]
    )
    response = client.post(SEND_URL, json={"message": message()}, headers={"Authorization": f"Bearer {forged}"})
    assert_graph_error(response, "graph.invalid_token")


def test_no_mail_send_role(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph", roles=["Mail.ReadBasic"])
    response = client.post(SEND_URL, json={"message": message()}, headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(response, "graph.no_mail_send")
    assert harness.deliveries() == []


def test_mailbox_outside_access_policy(client: httpx.Client) -> None:
    response = client.post("/v1.0/users/other@contoso.example/sendMail", json={"message": message()})
    assert_graph_error(response, "graph.access_policy")


def test_unknown_mailbox(client: httpx.Client) -> None:
    response = client.post("/v1.0/users/ghost@contoso.example/sendMail", json={"message": message()})
    assert_graph_error(response, "graph.invalid_user", user="ghost@contoso.example")


def test_unlicensed_mailbox(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"licensed": False}}})
    response = client.post(SEND_URL, json={"message": message()})
    assert_graph_error(response, "graph.mailbox_not_enabled")


def test_from_another_mailbox_needs_send_as(harness: Harness, client: httpx.Client) -> None:
    other = {"emailAddress": {"address": "noreply@contoso.example"}}
    response = client.post(SEND_URL, json={"message": message(**{"from": other})})
    assert_graph_error(response, "graph.send_as_denied")
    harness.apply_scenario({"mailboxes": {SENDER: {"send_as": ["noreply@contoso.example"]}}})
    assert client.post(SEND_URL, json={"message": message(**{"from": other})}).status_code == 202
    assert harness.deliveries()[0].sender == "noreply@contoso.example"


def test_me_with_an_app_only_token(client: httpx.Client) -> None:
    response = client.post("/v1.0/me/sendMail", json={"message": message()})
    assert_graph_error(response, "graph.me_app_only")


# -- request bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "name", "fmt"),
    [
        ({"message": message(toRecipients=[], ccRecipients=[], bccRecipients=[])}, "graph.invalid_recipients", {}),
        ({"message": {"subject": "x"}}, "graph.invalid_recipients", {}),
        ({"message": message(toRecipients=[{"emailAddress": {"address": "not-an-address"}}])},
         "graph.invalid_recipients", {}),
        ({"message": message(internetMessageHeaders=[])}, "graph.header_count", {}),
        ({"message": message(internetMessageHeaders=[{"name": f"X-H{i}", "value": "v"} for i in range(6)])},
         "graph.header_count", {}),
        ({"message": message(internetMessageHeaders=[{"name": "Reply-By", "value": "v"}])},
         "graph.invalid_header_name", {"header": "Reply-By"}),
        ({"message": message(attachments=[{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt",
                                           "contentBytes": "not base64!"}])}, "graph.invalid_mime", {}),
    ],
    ids=["no-recipients", "no-message", "bad-address", "empty-headers", "six-headers", "header-name",
         "bad-base64"],
)
def test_body_validation(
    harness: Harness, client: httpx.Client, body: dict[str, Any], name: str, fmt: dict[str, str]
) -> None:
    assert_graph_error(client.post(SEND_URL, json=body), name, **fmt)
    assert harness.deliveries() == []


def test_five_custom_headers_and_an_attachment_are_fine(harness: Harness, client: httpx.Client) -> None:
    content = b"%PDF-1.7 tiny"
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.pdf",
        "contentType": "application/pdf",
        "contentBytes": base64.b64encode(content).decode(),
    }
    headers = [{"name": f"X-Outbox-{i}", "value": "v"} for i in range(5)]
    body = {"message": message(internetMessageHeaders=headers, attachments=[attachment])}
    assert client.post(SEND_URL, json=body).status_code == 202
    [summary] = harness.deliveries()[0].extra["attachments"]
    assert (summary["size"], summary["sha256"]) == (len(content), hashlib.sha256(content).hexdigest())


def test_unparsable_body(client: httpx.Client) -> None:
    response = client.post(SEND_URL, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_graph_error(response, "graph.invalid_json")


def test_request_over_4_mb(harness: Harness, client: httpx.Client) -> None:
    big = base64.b64encode(b"\0" * (3 * 1024 * 1024 + 1)).decode()  # > 4 MiB once base64-encoded
    attachment = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "big.bin", "contentBytes": big}
    response = client.post(SEND_URL, json={"message": message(attachments=[attachment])})
    assert_graph_error(response, "graph.request_too_large")
    assert harness.deliveries() == []


# -- throttling ------------------------------------------------------------------------------------------


def test_fifth_concurrent_request_gets_mailbox_concurrency(harness: Harness, client: httpx.Client) -> None:
    harness.set_fault(service="graph", action="latency", latency_s=0.6, operation="sendMail")
    barrier = threading.Barrier(5)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return client.post(SEND_URL, json={"message": message()})

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(send, range(5)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 202, 202, 202, 429]
    [throttled] = [r for r in responses if r.status_code == 429]
    assert_graph_error(throttled, "graph.mailbox_concurrency")
    assert int(throttled.headers["Retry-After"]) >= 1
    assert len(harness.deliveries()) == 4


def test_request_budget_then_recovery_after_the_window(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"requests_per_window": 3, "window_s": 1.0}}})
    for _ in range(3):
        assert client.post(SEND_URL, json={"message": message()}).status_code == 202
    throttled = client.post(SEND_URL, json={"message": message()})
    assert_graph_error(throttled, "graph.request_budget")
    retry_after = int(throttled.headers["Retry-After"])
    assert retry_after == 1
    time.sleep(retry_after)  # what a client honouring Retry-After does
    assert client.post(SEND_URL, json={"message": message()}).status_code == 202


def test_budget_is_per_app_and_mailbox(harness: Harness, client: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"requests_per_window": 1, "window_s": 60.0}}})
    assert client.post(SEND_URL, json={"message": message()}).status_code == 202
    assert client.post(SEND_URL, json={"message": message()}).status_code == 429
    assert client.post("/v1.0/users/noreply@contoso.example/sendMail", json={"message": message()}).status_code == 202


# -- faults ----------------------------------------------------------------------------------------------


def test_reply_fault_answers_catalog_entry_and_delivers_nothing(harness: Harness, client: httpx.Client) -> None:
    harness.set_fault(service="graph", action="reply", catalog="graph.service_unavailable", retry_after=7, times=1)
    response = client.post(SEND_URL, json={"message": message()})
    assert_graph_error(response, "graph.service_unavailable")
    assert response.headers["Retry-After"] == "7"
    assert harness.deliveries() == []
    assert client.post(SEND_URL, json={"message": message()}).status_code == 202


@pytest.mark.parametrize("delivered", [True, False])
def test_gateway_timeout_may_or_may_not_have_delivered(
    harness: Harness, client: httpx.Client, delivered: bool
) -> None:
    harness.set_fault(
        service="graph", action="reply", catalog="graph.gateway_timeout", times=1,
        params={"delivered": str(delivered).lower()},
    )
    response = client.post(SEND_URL, json={"message": message(internetMessageId="<amb@contoso.example>")})
    assert_graph_error(response, "graph.gateway_timeout")
    assert len(harness.deliveries()) == (1 if delivered else 0)
    lookup = client.get(SENT_ITEMS, params={"$filter": "internetMessageId eq '<amb@contoso.example>'"})
    assert len(lookup.json()["value"]) == (1 if delivered else 0)


@pytest.mark.parametrize(("action", "delivered", "expected"), [
    ("drop_after_body", None, 1),
    ("drop_after_body", "false", 0),
    ("drop", None, 0),
])
def test_dropped_connections(
    harness: Harness, client: httpx.Client, action: str, delivered: str | None, expected: int
) -> None:
    params = {"delivered": delivered} if delivered else {}
    harness.set_fault(service="graph", action=action, times=1, params=params, operation="sendMail")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(SEND_URL, json={"message": message()})
    assert len(harness.deliveries()) == expected
    assert client.post(SEND_URL, json={"message": message()}).status_code == 202


def test_fault_selected_by_recipient(harness: Harness, client: httpx.Client) -> None:
    harness.set_fault(service="graph", action="reply", catalog="graph.general_exception",
                      recipient="cc@fabrikam.example", times=1)
    solo = message(ccRecipients=[], bccRecipients=[])
    assert client.post(SEND_URL, json={"message": solo}).status_code == 202
    assert_graph_error(client.post(SEND_URL, json={"message": message()}), "graph.general_exception")


# -- drafts and upload sessions ----------------------------------------------------------------------------


def _upload_draft(
    client: httpx.Client, anonymous: httpx.Client, content: bytes, chunk: int
) -> tuple[str, httpx.Response]:
    draft = client.post(f"/v1.0/users/{SENDER}/messages", json=message(internetMessageId="<big@contoso.example>"))
    assert draft.status_code == 201, draft.text
    draft_id = draft.json()["id"]
    session = client.post(
        f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": len(content)}},
    )
    assert session.status_code == 201, session.text
    assert session.json()["nextExpectedRanges"] == ["0-"]
    upload_url = session.json()["uploadUrl"]
    last: httpx.Response | None = None
    for start in range(0, len(content), chunk):
        part = content[start:start + chunk]
        last = _put_range(anonymous, upload_url, content, start, start + len(part))
        if start + chunk < len(content):
            assert last.status_code == 200, last.text
            assert last.json()["nextExpectedRanges"] == [f"{start + len(part)}-"]
    assert last is not None
    return draft_id, last


def _put_range(anonymous: httpx.Client, url: str, content: bytes, start: int, end: int) -> httpx.Response:
    return anonymous.put(
        url,
        content=content[start:end],
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{end - 1}/{len(content)}",
        },
    )


def test_five_mb_attachment_through_an_upload_session(
    harness: Harness, client: httpx.Client, anonymous: httpx.Client
) -> None:
    content = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    draft_id, final = _upload_draft(client, anonymous, content, chunk=2 * 1024 * 1024)
    assert final.status_code == 201
    assert "/Attachments('" in final.headers["Location"]
    sent = client.post(f"/v1.0/users/{SENDER}/messages/{draft_id}/send")
    assert sent.status_code == 202
    [delivery] = harness.deliveries()
    [attachment] = delivery.extra["attachments"]
    assert attachment["size"] == len(content)
    assert attachment["sha256"] == hashlib.sha256(content).hexdigest()
    assert delivery.saved_to_sent_items
    lookup = client.get(SENT_ITEMS, params={"$filter": "internetMessageId eq '<big@contoso.example>'"})
    assert lookup.json()["value"][0]["hasAttachments"] is True


def test_upload_url_refuses_an_authorization_header(harness: Harness, client: httpx.Client) -> None:
    draft_id = client.post(f"/v1.0/users/{SENDER}/messages", json=message()).json()["id"]
    size = 3 * 1024 * 1024 + 10
    session = client.post(
        f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "x.bin", "size": size}},
    ).json()
    response = client.put(
        session["uploadUrl"],
        content=b"\0" * 10,
        headers={"Content-Type": "application/octet-stream", "Content-Range": f"bytes 0-9/{size}"},
    )
    error = assert_graph_error(
        response, "graph.upload_authorization", audience="https://graph.microsoft.com", url=session["uploadUrl"]
    )
    assert "innerError" not in error


def test_upload_session_below_3_mb_and_out_of_order_ranges(client: httpx.Client, anonymous: httpx.Client) -> None:
    draft_id = client.post(f"/v1.0/users/{SENDER}/messages", json=message()).json()["id"]
    url = f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments/createUploadSession"
    small = client.post(url, json={"AttachmentItem": {"attachmentType": "file", "name": "s", "size": 1000}})
    assert_graph_error(small, "graph.upload_too_small")
    size = 4 * 1024 * 1024
    upload_url = client.post(url, json={"AttachmentItem": {"attachmentType": "file", "name": "b", "size": size}}).json()["uploadUrl"]
    skipped = _put_range(anonymous, upload_url, b"\0" * size, 100, 110)
    assert_graph_error(skipped, "graph.upload_range")


def test_drafts_need_mail_read_write(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph", roles=["Mail.Send"])
    response = client.post(
        f"/v1.0/users/{SENDER}/messages", json=message(), headers={"Authorization": f"Bearer {token}"}
    )
    assert_graph_error(response, "graph.no_mail_send")


def test_upload_bytes_budget(harness: Harness, client: httpx.Client, anonymous: httpx.Client) -> None:
    harness.apply_scenario({"limits": {"graph": {"upload_bytes_per_window": 3 * 1024 * 1024, "upload_window_s": 60.0}}})
    content = b"\1" * (3 * 1024 * 1024 + 100)
    draft_id = client.post(f"/v1.0/users/{SENDER}/messages", json=message()).json()["id"]
    upload_url = client.post(
        f"/v1.0/users/{SENDER}/messages/{draft_id}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "b", "size": len(content)}},
    ).json()["uploadUrl"]
    half = 2 * 1024 * 1024
    assert _put_range(anonymous, upload_url, content, 0, half).status_code == 200
    second = _put_range(anonymous, upload_url, content, half, len(content))
    assert_graph_error(second, "graph.incoming_bytes")
    assert int(second.headers["Retry-After"]) >= 1


def test_unknown_path_is_resource_not_found(client: httpx.Client) -> None:
    assert_graph_error(client.get("/v1.0/sendMail"), "graph.resource_not_found")


def test_error_bodies_are_json_graph_shape(client: httpx.Client) -> None:
    response = client.post("/v1.0/users/ghost@contoso.example/sendMail", json={"message": message()})
    body = json.loads(response.content)
    assert set(body["error"]) == {"code", "message", "innerError"}
    assert set(body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}


# -- items saved in Sent Items (outbox's copy of an SMTP submission) ---------------------------------------

FLAGS = "Integer 0x0E07"


def test_an_item_saved_with_message_flags_is_a_sent_item_and_no_delivery(harness: Harness, client: httpx.Client) -> None:
    imid = "<outbox.copy-1@contoso.example>"
    body = message(internetMessageId=imid, singleValueExtendedProperties=[
        {"id": FLAGS, "value": "1"}, {"id": "SystemTime 0x0039", "value": "2026-12-04T07:00:00Z"}])
    created = client.post(SENT_ITEMS, json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["isDraft"], created.json()["parentFolderId"]) == (False, "sentitems")
    [item] = client.get(SENT_ITEMS, params={"$filter": f"internetMessageId eq '{imid}'"}).json()["value"]
    assert (item["isDraft"], item["sentDateTime"], item["subject"]) == (False, "2026-12-04T07:00:00Z", "Invoice 42")
    assert harness.deliveries() == []  # saving an item sends it to nobody


@pytest.mark.parametrize("flags", [None, "9"], ids=["no-flags", "unsent-bit"])
def test_an_item_saved_without_clearing_unsent_is_a_draft(client: httpx.Client, flags: str | None) -> None:
    # Exchange makes a created item a draft unless PidTagMessageFlags is given without MSGFLAG_UNSENT (0x8).
    extra = {} if flags is None else {"singleValueExtendedProperties": [{"id": FLAGS, "value": flags}]}
    created = client.post(SENT_ITEMS, json=message(**extra))
    assert created.status_code == 201 and created.json()["isDraft"] is True


def test_saving_an_item_needs_mail_readwrite(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph", roles=["Mail.Send", "Mail.ReadBasic"])
    response = client.post(SENT_ITEMS, json=message(), headers={"Authorization": f"Bearer {token}"})
    assert_graph_error(response, "graph.no_mail_send")


def test_saving_an_item_binds_the_body_like_graph(client: httpx.Client) -> None:
    response = client.post(SENT_ITEMS, json=message(singleValueExtendedProperties=[{"id": FLAGS, "value": 1}]))
    assert_graph_error(response, "graph.request_body_read_value", value="1", type="Edm.String")
    unknown = client.post(SENT_ITEMS, json=message(isSent=True))
    assert_graph_error(unknown, "graph.request_body_read", property="isSent", type="Microsoft.OutlookServices.Message")
