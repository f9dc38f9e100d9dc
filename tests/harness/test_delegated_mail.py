"""Graph and SMTP fakes with delegated (user) tokens from a real MSAL sign-in: Microsoft's mailbox rules."""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from harness.up import Harness
from shared import catalog
from tests.harness.delegated import DELEGATE, SENDER, SHARED, SMTP_SEND, sign_in

OTHER = "other@contoso.example"


def _token(h: Harness, user: str, scopes: list[str]) -> str:
    return str(sign_in(h, user, scopes)["access_token"])


@pytest.fixture
def graph(harness: Harness) -> Iterator[Any]:
    """graph(token) -> httpx.Client on the fake Graph with that bearer token."""
    opened: list[httpx.Client] = []

    def factory(token: str) -> httpx.Client:
        client = httpx.Client(
            base_url=harness.url("graph"),
            verify=ssl.create_default_context(cafile=str(harness.ca_bundle)),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


def _message(sender: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": "Invoice 42",
        "body": {"contentType": "Text", "content": "Hello"},
        "toRecipients": [{"emailAddress": {"address": "to@fabrikam.example"}}],
    }
    if sender:
        body["from"] = {"emailAddress": {"address": sender}}
    return body


def _assert_error(response: httpx.Response, name: str) -> None:
    entry = catalog.entry(name)
    assert response.status_code == entry.status, response.text
    assert response.json()["error"]["code"] == entry.code
    assert response.json()["error"]["message"] == entry.render()


# -- Graph -----------------------------------------------------------------------------------------------


def test_me_send_mail_sends_from_the_signed_in_mailbox(harness: Harness, graph: Any) -> None:
    client = graph(_token(harness, SENDER, ["Mail.Send"]))
    assert client.post("/v1.0/me/sendMail", json={"message": _message()}).status_code == 202
    [delivery] = harness.runtime.state.deliveries()
    assert (delivery.mailbox, delivery.sender, delivery.auth_type, delivery.user) == (SENDER, SENDER, "delegated", SENDER)
    [listed] = harness.control.deliveries()
    assert (listed.auth_type, listed.user) == ("delegated", SENDER)


def test_app_only_sends_are_recorded_as_app(harness: Harness, graph: Any) -> None:
    client = graph(harness.mint_token("graph"))
    assert client.post(f"/v1.0/users/{SENDER}/sendMail", json={"message": _message()}).status_code == 202
    [delivery] = harness.control.deliveries()
    assert (delivery.auth_type, delivery.user) == ("app", None)
    _assert_error(client.post("/v1.0/me/sendMail", json={"message": _message()}), "graph.me_app_only")


def test_own_mailbox_needs_mail_send(harness: Harness, graph: Any) -> None:
    reader = graph(_token(harness, SENDER, ["Mail.ReadBasic"]))
    _assert_error(reader.post(f"/v1.0/users/{SENDER}/sendMail", json={"message": _message()}), "graph.no_mail_send")
    _assert_error(reader.post("/v1.0/me/sendMail", json={"message": _message()}), "graph.no_mail_send")
    sender = graph(_token(harness, SENDER, ["Mail.Send"]))
    user = harness.scenario.user(SENDER)
    assert user is not None
    assert sender.post(f"/v1.0/users/{user.object_id}/sendMail", json={"message": _message()}).status_code == 202
    assert harness.runtime.state.deliveries()[0].mailbox == SENDER


def test_shared_mailbox_with_send_shared_full_access_and_send_as(harness: Harness, graph: Any) -> None:
    client = graph(_token(harness, DELEGATE, ["Mail.Send", "Mail.Send.Shared"]))
    url = f"/v1.0/users/{SHARED}/sendMail"
    assert client.post(url, json={"message": _message()}).status_code == 202
    assert client.post(url, json={"message": _message(SHARED)}).status_code == 202
    deliveries = harness.runtime.state.deliveries()
    assert {(d.mailbox, d.sender, d.auth_type, d.user) for d in deliveries} == {(SHARED, SHARED, "delegated", DELEGATE)}


def test_shared_mailbox_without_mail_send_shared(harness: Harness, graph: Any) -> None:
    client = graph(_token(harness, DELEGATE, ["Mail.Send"]))
    _assert_error(client.post(f"/v1.0/users/{SHARED}/sendMail", json={"message": _message()}), "graph.access_denied")
    _assert_error(client.post("/v1.0/me/sendMail", json={"message": _message(SHARED)}), "graph.access_denied")
    assert harness.runtime.state.deliveries() == []


def test_shared_mailbox_without_full_access(harness: Harness, graph: Any) -> None:
    """sender@ has Mail.Send.Shared consented but no FullAccess on noreply@."""
    client = graph(_token(harness, SENDER, ["Mail.Send", "Mail.Send.Shared"]))
    _assert_error(client.post(f"/v1.0/users/{SHARED}/sendMail", json={"message": _message()}), "graph.access_denied")


def test_shared_mailbox_without_send_as(harness: Harness, graph: Any) -> None:
    harness.control.apply_scenario(patch={"mailboxes": {DELEGATE: {"send_as": []}}})
    client = graph(_token(harness, DELEGATE, ["Mail.Send", "Mail.Send.Shared"]))
    _assert_error(client.post(f"/v1.0/users/{SHARED}/sendMail", json={"message": _message()}), "graph.send_as_denied")
    _assert_error(client.post("/v1.0/me/sendMail", json={"message": _message(SHARED)}), "graph.send_as_denied")


def test_me_with_from_a_shared_mailbox_lands_in_the_users_sent_items(harness: Harness, graph: Any) -> None:
    client = graph(_token(harness, DELEGATE, ["Mail.Send", "Mail.Send.Shared"]))
    assert client.post("/v1.0/me/sendMail", json={"message": _message(SHARED)}).status_code == 202
    [delivery] = harness.runtime.state.deliveries()
    assert (delivery.mailbox, delivery.sender) == (DELEGATE, SHARED)


def test_sent_items_lookup_needs_a_read_scope(harness: Harness, graph: Any) -> None:
    sender = graph(_token(harness, SENDER, ["Mail.Send"]))
    assert sender.post("/v1.0/me/sendMail", json={"message": _message()}).status_code == 202
    _assert_error(sender.get(f"/v1.0/users/{SENDER}/mailFolders/sentitems/messages"), "graph.access_denied")
    reader = graph(_token(harness, SENDER, ["Mail.ReadBasic"]))
    for path in (f"/v1.0/users/{SENDER}/mailFolders/sentitems/messages", "/v1.0/me/mailFolders/sentitems/messages"):
        listed = reader.get(path)
        assert listed.status_code == 200 and [m["subject"] for m in listed.json()["value"]] == ["Invoice 42"]
    delegate = graph(_token(harness, DELEGATE, ["Mail.ReadBasic"]))
    _assert_error(delegate.get(f"/v1.0/users/{SENDER}/mailFolders/sentitems/messages"), "graph.access_denied")


def test_outlook_token_is_refused_by_graph(harness: Harness, graph: Any) -> None:
    client = graph(_token(harness, SENDER, [SMTP_SEND]))
    assert client.post("/v1.0/me/sendMail", json={"message": _message()}).status_code == 401


# -- SMTP ------------------------------------------------------------------------------------------------


def _mail(sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "to@fabrikam.example"
    message["Subject"] = "Invoice 42"
    message.set_content("Hello")
    return message


@pytest.fixture
def smtp(harness: Harness) -> Iterator[Any]:
    """smtp(user, token) -> (code, smtplib.SMTP) after AUTH XOAUTH2."""
    opened: list[smtplib.SMTP] = []
    endpoint = harness.endpoints["smtp"]
    tls = ssl.create_default_context(cafile=str(harness.ca_bundle))

    def factory(user: str, token: str) -> tuple[int, smtplib.SMTP]:
        client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=10)
        opened.append(client)
        client.ehlo()
        client.starttls(context=tls)
        client.ehlo()
        blob = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        code, _ = client.docmd("AUTH", f"XOAUTH2 {blob}")
        return code, client

    yield factory
    for client in opened:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def test_smtp_with_a_delegated_token_as_the_upn(harness: Harness, smtp: Any) -> None:
    token = _token(harness, SENDER, [SMTP_SEND])
    code, client = smtp(SENDER.upper(), token)
    assert code == 235
    client.send_message(_mail(SENDER))
    [delivery] = harness.control.deliveries()
    assert (delivery.transport, delivery.mailbox, delivery.auth_type, delivery.user) == ("smtp", SENDER, "delegated", SENDER)


def test_smtp_user_must_be_the_upn_or_a_full_access_mailbox(harness: Harness, smtp: Any) -> None:
    sender_token = _token(harness, SENDER, [SMTP_SEND])
    assert smtp(OTHER, sender_token)[0] == 535
    assert smtp(SHARED, sender_token)[0] == 535  # no FullAccess on noreply@
    code, client = smtp(SHARED, _token(harness, DELEGATE, [SMTP_SEND]))
    assert code == 235
    client.send_message(_mail(SHARED))
    [delivery] = harness.runtime.state.deliveries()
    assert (delivery.mailbox, delivery.user) == (SHARED, DELEGATE)


def test_smtp_delegate_sends_as_the_shared_mailbox(harness: Harness, smtp: Any) -> None:
    code, client = smtp(DELEGATE, _token(harness, DELEGATE, [SMTP_SEND]))
    assert code == 235
    client.send_message(_mail(SHARED))
    assert harness.runtime.state.deliveries()[0].sender == SHARED
    code, client = smtp(SENDER, _token(harness, SENDER, [SMTP_SEND]))
    assert code == 235
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.send_message(_mail(SHARED))
    assert refused.value.smtp_code == 550


def test_smtp_refuses_delegated_tokens_without_smtp_send(harness: Harness, smtp: Any) -> None:
    assert smtp(SENDER, _token(harness, SENDER, ["Mail.Send"]))[0] == 535  # a Graph token
    harness.control.apply_scenario(patch={"users": {SENDER: {"consented": ["Mail.Send", "https://outlook.office.com/IMAP.AccessAsUser.All"]}}})
    imap = _token(harness, SENDER, ["https://outlook.office.com/IMAP.AccessAsUser.All"])
    assert smtp(SENDER, imap)[0] == 535
