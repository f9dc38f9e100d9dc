"""The inbox's server side without a browser: the control API's paged and per-message reads, the body
frame's policy, what is served inline and what only as a download, and the scenario summary."""

from __future__ import annotations

import email.message
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.inbox.server import misconfigurations
from harness.state import Delivery
from harness.up import Harness

SENDER = "sender@contoso.example"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture
def client(harness: Harness) -> Iterator[httpx.Client]:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(harness.ca_bundle)), timeout=30) as c:
        yield c


def mime(subject: str = "Report", *, html: str | None = None, attachment: tuple[str, bytes] | None = None,
         inline: tuple[str, str, bytes] | None = None) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = f"Sender <{SENDER}>"
    message["To"] = "Ana <ana@fabrikam.example>"
    message["Cc"] = "cc@fabrikam.example"
    message["Subject"] = subject
    message.set_content("plain body")
    if html is not None:
        message.add_alternative(html, subtype="html")
        if inline is not None:
            cid, ctype, data = inline
            main, sub = ctype.split("/")
            message.get_payload()[1].add_related(data, maintype=main, subtype=sub, cid=f"<{cid}>")
    if attachment is not None:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


def smtp_delivery(harness: Harness, raw: bytes, *, subject: str = "Report", time: float | None = None) -> Delivery:
    extra: dict[str, Any] = {} if time is None else {"time": time}
    return harness.state.add_delivery(Delivery(
        transport="smtp", mailbox=SENDER, app_id=harness.scenario.sender.client_id,
        recipients=("ana@fabrikam.example", "cc@fabrikam.example", "hidden@fabrikam.example"),
        subject=subject, sender=SENDER, raw_mime=raw, message_id="<m1@contoso.example>", **extra))


def test_pages_are_newest_first_filtered_and_bounded(harness: Harness, client: httpx.Client) -> None:
    for n in range(120):
        smtp_delivery(harness, mime(f"bulk {n:03d}"), subject=f"bulk {n:03d}", time=1000.0 + n)
    base = harness.url("control")
    page = client.get(f"{base}/deliveries/page", params={"limit": 50, "offset": 50}).json()
    assert page["total"] == 120 and page["offset"] == 50 and len(page["items"]) == 50
    assert page["items"][0]["subject"] == "bulk 069" and page["items"][-1]["subject"] == "bulk 020"
    found = client.get(f"{base}/deliveries/page", params={"q": "BULK 11"}).json()
    assert [i["subject"] for i in found["items"]] == [f"bulk {n}" for n in range(119, 109, -1)]
    assert client.get(f"{base}/deliveries/page", params={"transport": "graph"}).json()["total"] == 0
    row = found["items"][0]
    assert row["appName"] == "outbox sender" and row["to"] == ["ana@fabrikam.example"]
    assert row["cc"] == ["cc@fabrikam.example"] and row["bcc"] == ["hidden@fabrikam.example"]
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"offset": -1}):
        answer = client.get(f"{base}/deliveries/page", params=bad)
        assert answer.status_code == 400 and next(iter(bad)) in answer.json()["error"]
    assert harness.control.deliveries_page(limit=2, text="bulk 00")["items"][1]["subject"] == "bulk 008"
    before = client.get(f"{base}/deliveries/page").json()["version"]
    smtp_delivery(harness, mime())
    assert client.get(f"{base}/deliveries/page").json()["version"] != before


def test_a_message_its_source_and_its_attachments(harness: Harness, client: httpx.Client) -> None:
    blob = bytes(range(256)) * 4
    raw = mime(html='<p>hi <img src="cid:logo@x"></p>', attachment=("résumé.bin", blob),
               inline=("logo@x", "image/png", PNG))
    delivery = smtp_delivery(harness, raw)
    base = f"{harness.url('control')}/deliveries/{delivery.id}"
    detail = client.get(base).json()
    view = detail["view"]
    assert view["text"].strip() == "plain body" and view["hasHtml"] and view["sourceKind"] == "mime"
    assert ["Subject", "Report"] in view["headers"]
    inline, attachment = view["attachments"]
    assert (inline["contentId"], inline["inline"], attachment["name"]) == ("<logo@x>", True, "résumé.bin")
    source = client.get(f"{base}/source")
    assert source.content == raw and source.headers["content-type"].startswith("text/plain")
    assert source.headers["x-content-type-options"] == "nosniff"
    download = client.get(f"{base}/attachments/{attachment['index']}")
    assert download.content == blob
    assert download.headers["content-type"] == "application/octet-stream"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.bin" in download.headers["content-disposition"]
    assert client.get(f"{base}/attachments/9").status_code == 404
    assert client.get(f"{harness.url('control')}/deliveries/nope").status_code == 404


def test_graph_json_deliveries_and_sent_items(harness: Harness, client: httpx.Client) -> None:
    token = harness.mint_token("graph")
    message = {"message": {
        "subject": "Graph one", "body": {"contentType": "HTML", "content": "<b>bold</b>"},
        "from": {"emailAddress": {"address": SENDER, "name": "Billing"}},
        "toRecipients": [{"emailAddress": {"address": "ana@fabrikam.example"}}],
        "bccRecipients": [{"emailAddress": {"address": "audit@fabrikam.example"}}],
        "attachments": [{"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.txt",
                         "contentType": "text/plain", "contentBytes": "aGVsbG8="}]}}
    sent = client.post(f"{harness.url('graph')}/v1.0/users/{SENDER}/sendMail", json=message,
                       headers={"Authorization": f"Bearer {token}"})
    assert sent.status_code == 202, sent.text
    (delivery,) = harness.deliveries()
    base = harness.url("control")
    view = client.get(f"{base}/deliveries/{delivery.id}").json()["view"]
    assert view["from"] == '"Billing" <sender@contoso.example>' and view["bcc"] == ["audit@fabrikam.example"]
    assert view["text"] is None and view["hasHtml"] and view["sourceKind"] == "graph-json"
    assert client.get(f"{base}/deliveries/{delivery.id}/attachments/0").content == b"hello"
    listing = client.get(f"{base}/sent-items", params={"mailbox": SENDER}).json()
    assert [(m["subject"], m["deliveryId"]) for m in listing["value"]] == [("Graph one", delivery.id)]
    assert harness.control.sent_items(SENDER) == listing["value"]
    assert client.get(f"{base}/sent-items").status_code == 400


def test_the_body_frame_is_sandboxed_and_blocks_remote_content_until_asked(harness: Harness,
                                                                            client: httpx.Client) -> None:
    html = ('<meta http-equiv="refresh" content="0;url=https://evil.example/"><link rel="stylesheet" '
            'href="https://evil.example/x.css"><p>hi</p><img src="cid:logo@x"><img src="https://evil.example/i.png">')
    delivery = smtp_delivery(harness, mime(html=html, inline=("logo@x", "image/png", PNG)))
    url = harness.start_inbox()
    frame = client.get(f"{url}/frame/{delivery.id}")
    policy = frame.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy and "script-src" not in policy
    images = policy.split("img-src", 1)[1].split(";")[0].split()
    assert images == ["'self'", url, "data:"]  # the inline parts only: no scheme-wide source
    assert "http-equiv" not in frame.text and "<link" not in frame.text
    assert f'src="{url}/part/{delivery.id}/0"' in frame.text  # cid: resolved to the inline part
    remote = client.get(f"{url}/frame/{delivery.id}", params={"remote": "1"})
    assert "https: http:" in remote.headers["content-security-policy"] and "<link" in remote.text
    part = client.get(f"{url}/part/{delivery.id}/0")
    assert part.content == PNG and part.headers["content-type"] == "image/png"


def test_only_raster_images_are_served_inline(harness: Harness, client: httpx.Client) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    delivery = smtp_delivery(harness, mime(html='<img src="cid:s@x">', inline=("s@x", "image/svg+xml", svg)))
    url = harness.start_inbox()
    part = client.get(f"{url}/part/{delivery.id}/0")
    assert part.content == svg and part.headers["content-type"] == "application/octet-stream"
    assert part.headers["content-disposition"].startswith("attachment")


def test_the_page_is_strict_and_its_requests_stay_out_of_the_log(harness: Harness, client: httpx.Client) -> None:
    url = harness.start_inbox()
    page = client.get(url)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
    assert client.get(f"{url}/static/inbox.js").headers["content-type"].startswith("text/javascript")
    for path in ("/static/..%2Fserver.py", "/static/server.py", "/static/nope.js"):
        assert client.get(f"{url}{path}").status_code == 404, path
    assert client.get(f"{url}/outbox/poison").status_code == 404  # no storage settings given
    assert client.get(f"{url}/api/deliveries/page").json()["total"] == 0  # the control API, same origin
    assert "inbox" not in harness.control.requests()


def test_misconfigurations_name_the_setting_to_change(harness: Harness) -> None:
    scenario = harness.scenario.with_changes({"exchange": {"smtp_auth_enabled": False},
                                              "mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    found = misconfigurations(scenario)
    assert any(f.startswith("exchange.smtp_auth_enabled = false") for f in found)
    assert any(f.startswith(f'mailboxes."{SENDER}".smtp_auth_enabled = false') for f in found)
    assert misconfigurations(harness.scenario) == []


def test_other_sites_cannot_drive_the_page(harness: Harness, client: httpx.Client) -> None:
    url = harness.start_inbox()
    rule = {"service": "graph", "catalog": "graph.server_busy"}
    cross = client.post(f"{url}/api/faults", json=rule, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and "another origin" in cross.json()["error"]
    rebound = client.get(f"{url}/api/deliveries/page", headers={"Host": "evil.example"})
    assert rebound.status_code == 403
    assert harness.runtime.faults.rules() == []
    own = client.post(f"{url}/api/faults", json=rule, headers={"Origin": url})
    assert own.status_code == 201


@pytest.mark.parametrize("raw", [
    b"", b"no headers at all",
    b'Subject: =?utf-8?b?!!!?=\r\nTo: <<<@@>>>, "unterminated\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
    b"--x\r\nContent-Type: text/html; charset=nonexistent\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--x\r\n"
    b"Content-Disposition: attachment; filename*=bogus''%ZZ\r\n\r\nabc\r\n",
    b"Content-Type: multipart/related\r\n\r\nno boundary",
    b"From: \xff\xfe\r\nSubject: \x00\x01\r\n\r\nx",
])
def test_broken_mime_still_has_a_view_and_its_source(harness: Harness, client: httpx.Client, raw: bytes) -> None:
    delivery = smtp_delivery(harness, raw)
    base = f"{harness.url('control')}/deliveries/{delivery.id}"
    assert client.get(base).status_code == 200
    assert client.get(f"{base}/source").content == raw.decode("utf-8", errors="replace").encode()
    assert client.get(f"{harness.start_inbox()}/frame/{delivery.id}").status_code == 200


def test_a_body_no_parser_expected_shows_its_source_and_why(harness: Harness, client: httpx.Client) -> None:
    body = {"message": {"subject": "odd", "attachments": [{"name": "x", "size": "big"}]}}
    delivery = harness.state.add_delivery(Delivery(transport="graph", mailbox=SENDER, app_id="a",
                                                   recipients=("ana@fabrikam.example",), graph_json=body))
    view = client.get(f"{harness.url('control')}/deliveries/{delivery.id}").json()["view"]
    assert view["headers"][0][0] == "X-Inbox-Unreadable" and "big" in view["headers"][0][1]
    assert '"size": "big"' in client.get(f"{harness.url('control')}/deliveries/{delivery.id}/source").text
