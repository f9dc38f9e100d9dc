"""Graph JSON: the sendMail body field by field, the draft, and the size plan."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from shared.message import InvalidMessage, Message, parse_message
from shared.message_id import make_message_id
from shared.render_graph import (
    LARGE_ATTACHMENT_BYTES,
    MAX_REQUEST_BYTES,
    GraphSendPlan,
    estimate_request_bytes,
    file_attachment,
    plan_send,
    render_draft_message,
    render_send_mail,
    to_json_bytes,
    upload_session_body,
)

MID = "<outbox.0123456789abcdef0123456789abcdef@contoso.example>"

FULL: dict[str, Any] = {
    "id": "order-1",
    "from": {"address": "shop@contoso.example", "name": "Shop @ Contoso"},
    "to": ["a@x.example", {"address": "b@x.example", "name": "Doe, Bee"}],
    "cc": [{"address": "c@x.example", "name": "Cé"}],
    "bcc": ["audit@contoso.example"],
    "replyTo": ["help@contoso.example"],
    "subject": "Your order",
    "text": "plain version",
    "html": '<p>rich <img src="cid:logo"></p>',
    "attachments": [
        {"name": "logo.png", "contentBase64": "iVBORw==", "inline": True, "contentId": "logo"},
        {"name": "invoice.pdf", "contentBase64": base64.b64encode(b"%PDF-1.7").decode()},
    ],
    "headers": {"X-Order": "1", "X-Tenant": "t"},
    "importance": "high",
}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_full_message_field_by_field() -> None:
    body = render_send_mail(parse_message(FULL), internet_message_id=MID)
    assert list(body) == ["message", "saveToSentItems"]
    assert body["saveToSentItems"] is True
    m = body["message"]
    assert m["subject"] == "Your order"
    assert m["body"] == {"contentType": "HTML", "content": '<p>rich <img src="cid:logo"></p>'}
    assert m["from"] == {"emailAddress": {"address": "shop@contoso.example", "name": "Shop @ Contoso"}}
    assert m["toRecipients"] == [
        {"emailAddress": {"address": "a@x.example"}},
        {"emailAddress": {"address": "b@x.example", "name": "Doe, Bee"}},
    ]
    assert m["ccRecipients"] == [{"emailAddress": {"address": "c@x.example", "name": "Cé"}}]
    assert m["bccRecipients"] == [{"emailAddress": {"address": "audit@contoso.example"}}]
    assert m["replyTo"] == [{"emailAddress": {"address": "help@contoso.example"}}]
    assert m["importance"] == "high"
    assert m["internetMessageHeaders"] == [{"name": "X-Order", "value": "1"}, {"name": "X-Tenant", "value": "t"}]
    assert m["internetMessageId"] == MID
    assert m["attachments"] == [
        {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "logo.png",
            "contentType": "image/png",
            "contentBytes": "iVBORw==",
            "isInline": True,
            "contentId": "logo",
        },
        {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "invoice.pdf",
            "contentType": "application/pdf",
            "contentBytes": b64(b"%PDF-1.7"),
            "isInline": False,
        },
    ]
    assert set(m) == {
        "subject", "body", "from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo",
        "importance", "internetMessageHeaders", "internetMessageId", "attachments",
    }  # fmt: skip
    json.dumps(body)  # serialisable as is


def test_minimal_message_has_no_empty_collections() -> None:
    message = parse_message({"from": "a@x.example", "to": ["b@x.example"], "text": "t"})
    m = render_send_mail(message, internet_message_id=MID)["message"]
    assert m == {
        "subject": "",
        "body": {"contentType": "Text", "content": "t"},
        "from": {"emailAddress": {"address": "a@x.example"}},
        "toRecipients": [{"emailAddress": {"address": "b@x.example"}}],
        "internetMessageId": MID,
    }
    # an empty internetMessageHeaders array is a 400 on Graph: it must be absent, not []
    assert "internetMessageHeaders" not in m


def test_display_name_with_at_sign_stays_apart_from_the_address() -> None:
    message = parse_message({"from": '"ops@contoso (alerts)" <ops@contoso.example>', "to": ["b@x.example"], "text": "t"})
    sender = render_send_mail(message, internet_message_id=MID)["message"]["from"]["emailAddress"]
    assert sender == {"address": "ops@contoso.example", "name": "ops@contoso (alerts)"}


@pytest.mark.parametrize(
    ("message_flag", "argument", "expected"),
    [(None, None, True), (False, None, False), (True, None, True), (True, False, False), (False, True, True)],
)
def test_save_to_sent_items_is_always_explicit(message_flag: bool | None, argument: bool | None, expected: bool) -> None:
    body: dict[str, Any] = {"from": "a@x.example", "to": ["b@x.example"], "text": "t"}
    if message_flag is not None:
        body["saveToSentItems"] = message_flag
    rendered = render_send_mail(parse_message(body), internet_message_id=MID, save_to_sent_items=argument)
    assert rendered["saveToSentItems"] is expected


def test_six_headers_are_refused_before_graph_sees_them() -> None:
    message = parse_message({
        "from": "a@x.example", "to": ["b@x.example"], "text": "t",
        "headers": {f"X-H{i}": "v" for i in range(6)},
    })
    with pytest.raises(InvalidMessage) as caught:
        render_send_mail(message, internet_message_id=MID)
    assert [e.field for e in caught.value.errors] == ["headers"]


def test_unloaded_blob_attachment_is_a_clear_error() -> None:
    message = parse_message({"from": "a@x.example", "to": ["b@x.example"], "text": "t",
                             "attachments": [{"name": "r.pdf", "blob": "box/r.pdf"}]})
    with pytest.raises(ValueError, match=r"attachments\[0\].*box/r.pdf.*with_content"):
        render_send_mail(message, internet_message_id=MID)
    loaded = replace(message, attachments=(message.attachments[0].with_content(b"PDF"),))
    rendered = render_send_mail(loaded, internet_message_id=MID)
    assert rendered["message"]["attachments"][0]["contentBytes"] == b64(b"PDF")


def test_internet_message_id_must_be_bracketed() -> None:
    with pytest.raises(ValueError):
        render_send_mail(parse_message(FULL), internet_message_id="no-brackets@x")


def test_draft_excludes_attachments_and_has_no_save_flag() -> None:
    message = parse_message(FULL)
    draft = render_draft_message(message, internet_message_id=MID, exclude_attachments={1})
    assert "saveToSentItems" not in draft and "message" not in draft
    assert [a["name"] for a in draft["attachments"]] == ["logo.png"]
    assert draft["internetMessageId"] == MID
    everything_excluded = render_draft_message(message, internet_message_id=MID, exclude_attachments={0, 1})
    assert "attachments" not in everything_excluded
    # the draft holds the same message as sendMail's body
    full_draft = render_draft_message(message, internet_message_id=MID)
    assert full_draft == render_send_mail(message, internet_message_id=MID)["message"]


def test_upload_session_and_single_attachment_bodies() -> None:
    message = parse_message(FULL)
    logo = message.attachments[0]
    assert upload_session_body(logo) == {
        "AttachmentItem": {
            "attachmentType": "file", "name": "logo.png", "size": 4,
            "contentType": "image/png", "isInline": True, "contentId": "logo",
        }
    }
    assert file_attachment(logo)["contentBytes"] == "iVBORw=="


# --------------------------------------------------------------------------------- sizes


def sized_message(*sizes: int, html: str = "<p>x</p>") -> Message:
    attachments = [{"name": f"f{i}.bin", "contentBase64": b64(b"\0" * s)} for i, s in enumerate(sizes)]
    return parse_message({"from": "a@x.example", "to": ["b@x.example"], "html": html, "attachments": attachments})


@pytest.mark.parametrize("sizes", [(), (0,), (1,), (2,), (3,), (1000, 17, 5)])
def test_estimate_is_an_upper_bound_close_to_the_real_size(sizes: tuple[int, ...]) -> None:
    message = sized_message(*sizes, html="<p>Grüße ✓ 😀</p>")
    real_id = make_message_id("k", "a@x.example")
    for save in (True, False):
        real = len(to_json_bytes(render_send_mail(message, internet_message_id=real_id, save_to_sent_items=save)))
        estimate = estimate_request_bytes(message)
        assert real <= estimate <= real + 300
    exact = estimate_request_bytes(message, internet_message_id=real_id)
    assert exact - 1 <= len(to_json_bytes(render_send_mail(message, internet_message_id=real_id))) <= exact


def test_small_message_is_one_send_mail() -> None:
    plan = plan_send(sized_message(1000, 2000))
    assert plan == GraphSendPlan(use_draft=False, estimated_bytes=plan.estimated_bytes)
    assert plan.excluded_from_draft == frozenset()


def test_attachment_of_3_mib_goes_through_an_upload_session() -> None:
    plan = plan_send(sized_message(2 * 1024 * 1024, 10, LARGE_ATTACHMENT_BYTES))
    assert plan.use_draft
    assert plan.session_attachments == (2,)
    assert plan.posted_attachments == ()  # the rest fits in the draft
    assert plan.estimated_bytes <= MAX_REQUEST_BYTES
    assert plan.excluded_from_draft == frozenset({2})


def test_attachment_too_big_for_any_single_request_gets_a_session_even_under_3_mib() -> None:
    # base64 of 3 MiB - 1 bytes is 4 MiB: it fits neither the draft nor a POST of its own
    plan = plan_send(sized_message(LARGE_ATTACHMENT_BYTES - 1))
    assert plan.use_draft and plan.session_attachments == (0,) and plan.posted_attachments == ()


def test_many_small_attachments_over_4_mb_are_posted_one_by_one() -> None:
    mib = 1024 * 1024
    plan = plan_send(sized_message(2 * mib, 2 * mib, 2 * mib, 10))
    assert plan.use_draft and plan.session_attachments == ()
    assert len(plan.posted_attachments) == 2  # removing the two largest makes the draft fit
    assert 3 not in plan.posted_attachments
    assert plan.estimated_bytes <= MAX_REQUEST_BYTES


def test_thresholds_are_parameters() -> None:
    message = sized_message(100, 50)
    plan = plan_send(message, large_attachment_bytes=100)
    assert plan.session_attachments == (0,)
    just_too_small = estimate_request_bytes(message, draft=True) - 1
    plan = plan_send(message, large_attachment_bytes=1000, max_request_bytes=just_too_small)
    assert plan.use_draft and plan.posted_attachments == (0,) and plan.session_attachments == ()


def test_planning_needs_sizes_of_blob_attachments() -> None:
    message = parse_message({"from": "a@x.example", "to": ["b@x.example"], "text": "t",
                             "attachments": [{"name": "r.pdf", "blob": "box/r.pdf"}]})
    with pytest.raises(ValueError, match="no known size"):
        plan_send(message)
