"""design.md: message v1 is also the HTTP body (``POST /api/send``, docs/openapi.yaml), and a status row
that says ``queued`` before the function has tried it."""

from __future__ import annotations

import httpx

from tests.contract.conftest import SENDER, mail


def test_v1_body_over_http_is_queued_then_sent(local_stack) -> None:
    stack = local_stack(http=True)
    url = f"{stack.host.base_url}/api"
    headers = {"x-functions-key": "contract-key"}
    with httpx.Client(timeout=15) as client:
        answer = client.post(f"{url}/send", params={"mode": "queue"}, headers=headers,
                             json=mail(id="http-1", cc=[{"address": "carol@fabrikam.example", "name": "Carol"}]))
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["id"] == "http-1" and body["state"] == "queued"
        row = stack.wait_row("http-1", "sent")
        assert row["Transport"] == "graph" and row["Mailbox"] == SENDER
        status = client.get(f"{url}/messages/http-1", headers=headers)
        assert status.status_code == 200 and status.json()["state"] == "sent"


def test_invalid_v1_body_over_http_is_refused_naming_the_fields(local_stack) -> None:
    stack = local_stack(http=True)
    with httpx.Client(timeout=15) as client:
        answer = client.post(f"{stack.host.base_url}/api/send", params={"mode": "queue"},
                             headers={"x-functions-key": "contract-key"},
                             json={"from": SENDER, "to": "ana@fabrikam.example", "subject": "a\nb"})
    assert answer.status_code == 400
    text = answer.text
    for field in ("to", "subject", "text"):
        assert f'"{field}"' in text or f"{field}:" in text, text
    assert list(stack.storage.queue.peek_messages()) == [], "nothing is queued"


def test_a_body_that_cannot_fit_a_queue_message_is_refused_not_failed(local_stack) -> None:
    """A queue message holds 64 KiB: mode=queue must say so (claim check via blob), not answer 500."""
    stack = local_stack(http=True)
    with httpx.Client(timeout=15) as client:
        answer = client.post(f"{stack.host.base_url}/api/send", params={"mode": "queue"},
                             headers={"x-functions-key": "contract-key"},
                             json=mail(id="http-big", html="<p>" + "x" * 70_000 + "</p>"))
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    assert "blob" in answer.text
    assert list(stack.storage.queue.peek_messages()) == []
