"""Both transports end to end: queue -> local host -> function_app -> harness fakes."""

from __future__ import annotations

import email
import email.policy

from tests.e2e.conftest import NOREPLY, SENDER, Stack, mail


def test_graph_happy_path_lands_in_sent_items_with_every_field(stack: Stack) -> None:
    body = mail(
        id="g-happy-1",
        to=[{"address": "alice@fabrikam.example", "name": "Alice A"}],
        cc=["carol@fabrikam.example"],
        bcc=["bob@fabrikam.example"],
        replyTo=["replies@contoso.example"],
        subject="Quarterly report",
        text="plain body",
        html="<p>html body</p>",
        headers={"X-Order": "42"},
        importance="high",
        attachments=[{"name": "a.txt", "contentType": "text/plain", "contentBase64": "aGVsbG8="}],
    )
    stack.enqueue(body)
    row = stack.wait_state("g-happy-1", "sent")
    assert row.transport == "graph" and row.attempts == 1 and row.request_ids
    [d] = stack.harness.deliveries(transport="graph")
    assert d.mailbox == SENDER and d.saved_to_sent_items
    msg = d.graph_json["message"]
    assert msg["subject"] == "Quarterly report"
    assert msg["body"] == {"contentType": "HTML", "content": "<p>html body</p>"}
    assert msg["toRecipients"] == [{"emailAddress": {"address": "alice@fabrikam.example", "name": "Alice A"}}]
    assert [r["emailAddress"]["address"] for r in msg["ccRecipients"]] == ["carol@fabrikam.example"]
    assert [r["emailAddress"]["address"] for r in msg["bccRecipients"]] == ["bob@fabrikam.example"]
    assert [r["emailAddress"]["address"] for r in msg["replyTo"]] == ["replies@contoso.example"]
    assert msg["importance"] == "high"
    headers = {h["name"]: h["value"] for h in msg["internetMessageHeaders"]}
    assert headers["X-Order"] == "42"
    assert msg["attachments"][0]["name"] == "a.txt" and msg["attachments"][0]["contentBytes"] == "aGVsbG8="
    assert d.message_id == row.internet_message_id


def test_smtp_happy_path_mime_parses_and_bcc_is_delivered_not_shown(stack: Stack) -> None:
    stack.enqueue(mail(id="s-happy-1", transport="smtp", **{"from": NOREPLY}, to=["alice@fabrikam.example"],
                       bcc=["hidden@fabrikam.example"], subject="Über SMTP", text="hello", html="<b>hello</b>"),
                  base64_encode=True)
    row = stack.wait_state("s-happy-1", "sent")
    assert row.transport == "smtp"
    [d] = stack.harness.deliveries(transport="smtp")
    assert set(d.recipients) == {"alice@fabrikam.example", "hidden@fabrikam.example"}
    parsed = email.message_from_bytes(d.raw_mime or b"", policy=email.policy.default)
    assert parsed["Subject"] == "Über SMTP" and parsed["From"].addresses[0].addr_spec == NOREPLY
    assert parsed["To"] == "alice@fabrikam.example" and parsed["Bcc"] is None
    assert "hidden@fabrikam.example" not in (d.raw_mime or b"").decode("utf-8", "replace")
    assert parsed["Message-ID"] == row.internet_message_id
    assert parsed.get_content_type() == "multipart/alternative"


def test_both_transports_in_one_run(stack: Stack) -> None:
    for n in range(3):
        stack.enqueue(mail(id=f"mix-g{n}"))
        stack.enqueue(mail(id=f"mix-s{n}", transport="smtp"))
    for n in range(3):
        assert stack.wait_state(f"mix-g{n}", "sent").transport == "graph"
        assert stack.wait_state(f"mix-s{n}", "sent").transport == "smtp"
    assert len(stack.harness.deliveries(transport="graph")) == 3
    assert len(stack.harness.deliveries(transport="smtp")) == 3
