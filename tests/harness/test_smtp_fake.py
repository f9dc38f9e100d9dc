"""Contract tests of the fake Exchange SMTP with real, unchanged clients: smtplib and aiosmtplib.

Every failure is compared with ``harness.replies.smtp_reply`` (code, enhanced code and text).
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import time
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import pytest

from harness import replies
from harness.runtime import FAKE_EXCHANGE_HOST
from harness.up import Harness

SENDER = "sender@contoso.example"


def expected(name: str, **fmt: str) -> tuple[int, bytes]:
    code, text = replies.smtp_reply(name, **({"host": FAKE_EXCHANGE_HOST} | fmt))
    return code, text.encode()


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def mail(sender: str = SENDER, to: str = "to@fabrikam.example", **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Invoice 42"
    message["Message-ID"] = "<outbox.1@contoso.example>"
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Hello")
    return message


@pytest.fixture
def connect(harness: Harness, tls: ssl.SSLContext) -> Iterator:
    """connect(tls=True, login=True, user=SENDER, token=None) -> smtplib.SMTP; closed at the end."""
    opened: list[smtplib.SMTP] = []
    endpoint = harness.endpoints["smtp"]

    def factory(*, starttls: bool = True, login: bool = True, user: str = SENDER,
                token: str | None = None) -> smtplib.SMTP:
        client = smtplib.SMTP(endpoint.host, endpoint.port, timeout=10)
        opened.append(client)
        client.ehlo()
        if starttls:
            client.starttls(context=tls)
            client.ehlo()
        if login:
            bearer = token or harness.mint_token("exchange")
            client.auth("XOAUTH2", lambda challenge=None: xoauth2(user, bearer))
        return client

    yield factory
    for client in opened:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def auth_reply(client: smtplib.SMTP, user: str, token: str) -> tuple[int, bytes]:
    blob = base64.b64encode(xoauth2(user, token).encode()).decode()
    return client.docmd("AUTH", f"XOAUTH2 {blob}")


# -- EHLO, STARTTLS, AUTH ------------------------------------------------------------------------------


def test_ehlo_before_and_after_tls(connect) -> None:
    client = connect(starttls=False, login=False)
    assert client.has_extn("starttls")
    assert client.esmtp_features["size"] == "157286400"
    assert not client.has_extn("auth")
    assert client.docmd("AUTH", "XOAUTH2") == expected("smtp.auth_before_tls")
    assert client.docmd("MAIL", f"FROM:<{SENDER}>") == expected("smtp.not_authenticated")
    client.starttls()  # smtplib without a context: unverified, just to look at EHLO
    client.ehlo()
    assert client.esmtp_features["auth"].split() == ["LOGIN", "XOAUTH2"]
    assert not client.has_extn("starttls")


def test_auth_without_ehlo_after_starttls(harness: Harness, connect, tls: ssl.SSLContext) -> None:
    """smtplib.auth() does not EHLO again after STARTTLS, and it returns a 503 as if it were success."""
    client = connect(starttls=False, login=False)
    client.starttls(context=tls)
    token = harness.mint_token("exchange")
    code, text = client.auth("XOAUTH2", lambda challenge=None: xoauth2(SENDER, token))
    assert code == 503 and text.startswith(b"5.5.2 Send hello first")
    client.ehlo()
    assert client.docmd("MAIL", f"FROM:<{SENDER}>") == expected("smtp.not_authenticated")


def test_xoauth2_send_is_delivered_with_envelope_and_mime(harness: Harness, connect) -> None:
    client = connect()
    refused = client.send_message(mail(Cc="cc@fabrikam.example"), to_addrs=["to@fabrikam.example", "cc@fabrikam.example"])
    assert refused == {}
    [delivery] = harness.deliveries(transport="smtp")
    assert delivery.mailbox == SENDER
    assert delivery.app_id == harness.scenario.sender.client_id
    assert delivery.recipients == ("to@fabrikam.example", "cc@fabrikam.example")
    assert delivery.extra["mailFrom"] == SENDER
    assert delivery.message_id == "<outbox.1@contoso.example>"
    assert delivery.raw_mime is not None and b"Subject: Invoice 42" in delivery.raw_mime
    assert delivery.saved_to_sent_items  # Microsoft: SMTP AUTH submissions are stored in Sent Items
    assert [d.message_id for d in harness.state.sent_items(SENDER)] == ["<outbox.1@contoso.example>"]


def test_sent_items_copy_is_a_scenario_switch(harness: Harness, connect) -> None:
    harness.apply_scenario({"exchange": {"smtp_copies_to_sent_items": False}})  # the seed FAQ's claim
    connect().send_message(mail())
    assert len(harness.deliveries()) == 1 and harness.state.sent_items(SENDER) == []


def test_two_step_xoauth2_with_an_empty_challenge(harness: Harness, connect) -> None:
    client = connect(login=False)
    token = harness.mint_token("exchange")
    challenges: list[bytes | None] = []

    def answer(challenge: bytes | None = None) -> str:
        challenges.append(challenge)
        return xoauth2(SENDER, token)

    assert client.auth("XOAUTH2", answer, initial_response_ok=False) == (235, b"2.7.0 Authentication successful")
    assert challenges == [b""]


def test_long_token_line_is_accepted(harness: Harness, connect) -> None:
    token = harness.mint_token("exchange", extra_claims={"padding": "x" * 6000})
    client = connect(token=token)
    assert client.send_message(mail()) == {}


def test_aiosmtplib_xoauth2(harness: Harness, tls: ssl.SSLContext) -> None:
    endpoint = harness.endpoints["smtp"]
    token = harness.mint_token("exchange")

    async def tokens() -> str:
        return token

    async def run() -> None:
        client = aiosmtplib.SMTP(hostname=endpoint.host, port=endpoint.port, start_tls=True, tls_context=tls)
        await client.connect()
        await client.auth_xoauth2(SENDER, token)
        await client.send_message(mail())
        await client.quit()
        generated = aiosmtplib.SMTP(
            hostname=endpoint.host, port=endpoint.port, start_tls=True, tls_context=tls,
            username=SENDER, oauth_token_generator=tokens,
        )
        async with generated:
            await generated.send_message(mail())

    asyncio.run(run())
    assert len(harness.deliveries(transport="smtp")) == 2


# -- Exchange's one answer for every token problem ---------------------------------------------------------


def test_graph_token_on_smtp_is_535_5_7_3(harness: Harness, connect) -> None:
    client = connect(login=False)
    assert auth_reply(client, SENDER, harness.mint_token("graph")) == expected("smtp.auth_failed")


@pytest.mark.parametrize(
    "breakage",
    [
        "graph-token", "expired", "no-role", "no-service-principal", "wrong-object-id", "no-full-access",
        "unknown-mailbox",
    ],
)
def test_every_token_cause_gets_the_same_535(harness: Harness, connect, breakage: str) -> None:
    token = harness.mint_token("exchange")
    user = SENDER
    app = "outbox-sender"
    if breakage == "graph-token":
        token = harness.mint_token("graph")
    elif breakage == "expired":
        token = harness.mint_token("exchange", now=time.time() - 7200, lifetime_s=3600)
    elif breakage == "no-role":
        token = harness.mint_token("exchange", roles=[])
    elif breakage == "no-service-principal":
        harness.apply_scenario({"apps": {app: {"smtp": {"service_principal_registered": False}}}})
    elif breakage == "wrong-object-id":
        harness.apply_scenario({"apps": {app: {"smtp": {"service_principal_object_id": "00000000-0000-0000-0000-000000000bad"}}}})
    elif breakage == "no-full-access":
        harness.apply_scenario({"apps": {app: {"smtp": {"full_access": []}}}})
    elif breakage == "unknown-mailbox":
        user = "ghost@contoso.example"
    client = connect(login=False)
    assert auth_reply(client, user, token) == expected("smtp.auth_failed")
    assert client.docmd("MAIL", f"FROM:<{SENDER}>") == expected("smtp.not_authenticated")


def test_smtp_auth_switched_off(harness: Harness, connect) -> None:
    harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    client = connect(login=False)
    assert auth_reply(client, SENDER, harness.mint_token("exchange")) == expected("smtp.auth_disabled_mailbox")
    harness.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": True}}, "exchange": {"smtp_auth_enabled": False}})
    client = connect(login=False)
    assert auth_reply(client, SENDER, harness.mint_token("exchange")) == expected("smtp.auth_disabled_tenant")


def test_bad_user_and_basic_auth(harness: Harness, connect) -> None:
    client = connect(login=False)
    assert auth_reply(client, "not an address", harness.mint_token("exchange")) == expected("smtp.bad_user")
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        client.login(SENDER, "password")
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.basic_auth_disabled")


# -- envelope rules --------------------------------------------------------------------------------------


def test_mail_from_another_mailbox_needs_send_as(harness: Harness, connect) -> None:
    client = connect()
    assert client.docmd("MAIL", "FROM:<other@contoso.example>") == expected("smtp.send_as_denied")
    client.rset()
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.sendmail(SENDER, ["to@fabrikam.example"], mail(sender="other@contoso.example").as_bytes())
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected(
        "smtp.send_as_denied_submission", mailbox=SENDER, sender="other@contoso.example"
    )
    assert harness.deliveries() == []
    client.send_message(mail(sender="noreply@contoso.example"), from_addr="noreply@contoso.example")
    assert harness.deliveries()[0].sender == "noreply@contoso.example"


def test_doctor_probe_mail_rset_quit(harness: Harness, connect) -> None:
    client = connect()
    assert client.mail(SENDER) == (250, b"2.1.0 Sender OK")
    assert client.rset() == (250, b"2.0.0 Resetting")
    assert client.quit()[0] == 221
    assert harness.deliveries() == []


def test_too_many_recipients(harness: Harness, connect) -> None:
    harness.apply_scenario({"limits": {"smtp": {"recipients_per_message": 2}}})
    client = connect()
    client.mail(SENDER)
    assert client.rcpt("a@fabrikam.example")[0] == 250
    assert client.rcpt("b@fabrikam.example")[0] == 250
    assert client.rcpt("c@fabrikam.example") == expected("smtp.too_many_recipients")


def test_message_too_large(harness: Harness, connect) -> None:
    harness.apply_scenario({"limits": {"smtp": {"max_message_bytes": 2000}}})
    client = connect()
    assert client.docmd("MAIL", f"FROM:<{SENDER}> SIZE=5000") == expected("smtp.message_too_large")
    client.rset()
    big = mail()
    big.set_content("x" * 3000)
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        client.sendmail(SENDER, ["to@fabrikam.example"], big.as_bytes())  # smtplib declares SIZE=
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.message_too_large")
    # A client that does not declare the size finds out after DATA.
    assert client.mail(SENDER)[0] == 250
    assert client.rcpt("to@fabrikam.example")[0] == 250
    assert client.data(big.as_bytes()) == expected("smtp.message_too_large")
    assert harness.deliveries() == []


def test_fourth_concurrent_connection_gets_432_concurrent_connections(harness: Harness, connect) -> None:
    clients = [connect() for _ in range(4)]
    for client in clients[:3]:
        assert client.send_message(mail()) == {}
    with pytest.raises(smtplib.SMTPDataError) as caught:
        clients[3].send_message(mail())
    # Microsoft's documented text (SupportArticles, SMTP AUTH submission throttling).
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.concurrent_connections")
    clients[0].quit()
    assert clients[3].send_message(mail()) == {}
    assert len(harness.deliveries()) == 4


def test_the_older_thread_limit_text_is_a_scenario_switch(harness: Harness, connect) -> None:
    harness.apply_scenario({"limits": {"smtp": {"concurrency_reply": "thread_limit"}}})
    clients = [connect() for _ in range(4)]
    for client in clients[:3]:
        assert client.send_message(mail()) == {}
    with pytest.raises(smtplib.SMTPDataError) as caught:
        clients[3].send_message(mail())
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.thread_limit")


def test_messages_over_the_rate_are_carried_over_not_refused(harness: Harness, connect) -> None:
    # Microsoft: the excess is "throttled and successively carried over" (accepted, delivered later).
    harness.apply_scenario({"limits": {"smtp": {"messages_per_window": 2, "window_s": 60.0}}})
    client = connect()
    for _ in range(3):
        assert client.send_message(mail()) == {}
    deliveries = harness.deliveries()
    assert len(deliveries) == 3
    assert "carriedOverS" not in deliveries[0].extra and "carriedOverS" not in deliveries[1].extra
    assert 0 < deliveries[2].extra["carriedOverS"] <= 60


def test_messages_over_the_rate_are_refused_when_the_scenario_says_so(harness: Harness, connect) -> None:
    harness.apply_scenario({"limits": {"smtp": {"messages_per_window": 2, "window_s": 60.0, "over_rate": "refuse"}}})
    client = connect()
    client.send_message(mail())
    client.send_message(mail())
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(mail())
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.rate_limited")
    assert len(harness.deliveries()) == 2


def test_recipients_per_day_quota(harness: Harness, connect) -> None:
    harness.apply_scenario({"limits": {"smtp": {"recipients_per_day": 2}}})
    client = connect()
    assert client.sendmail(SENDER, ["a@fabrikam.example", "b@fabrikam.example"], mail().as_bytes()) == {}
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(mail())
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.submission_quota")
    assert len(harness.deliveries()) == 1


# -- faults ---------------------------------------------------------------------------------------------


def test_data_fault_reply_delivers_nothing(harness: Harness, connect) -> None:
    harness.set_fault(service="smtp", action="reply", catalog="smtp.temporary_error", times=1)
    client = connect()
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(mail())
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.temporary_error")
    assert harness.deliveries() == []
    assert client.send_message(mail()) == {}


@pytest.mark.parametrize(("action", "delivered", "count"), [
    ("drop_after_body", None, 1), ("drop_after_body", "false", 0), ("drop", None, 0),
])
def test_connection_dropped_after_the_body(
    harness: Harness, connect, action: str, delivered: str | None, count: int
) -> None:
    harness.set_fault(service="smtp", action=action, times=1, params={"delivered": delivered} if delivered else {})
    client = connect()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.send_message(mail())
    assert len(harness.deliveries()) == count


def test_fault_at_auth_and_at_connect(harness: Harness, connect, tls: ssl.SSLContext) -> None:
    harness.set_fault(service="smtp", operation="auth", action="reply", catalog="smtp.auth_conditional_access", times=1)
    client = connect(login=False)
    assert auth_reply(client, SENDER, harness.mint_token("exchange")) == expected("smtp.auth_conditional_access")
    harness.set_fault(service="smtp", operation="connect", action="reply", catalog="smtp.service_closing", times=1)
    endpoint = harness.endpoints["smtp"]
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP(endpoint.host, endpoint.port, timeout=10)
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.service_closing")


def test_fault_selected_by_recipient_and_latency(harness: Harness, connect) -> None:
    harness.set_fault(service="smtp", action="reply", catalog="smtp.mailbox_full", recipient="full@fabrikam.example")
    harness.set_fault(service="smtp", operation="mail", action="latency", latency_s=0.2)
    client = connect()
    started = time.monotonic()
    assert client.send_message(mail()) == {}
    assert time.monotonic() - started >= 0.2
    with pytest.raises(smtplib.SMTPDataError) as caught:
        client.send_message(mail(to="full@fabrikam.example"))
    assert (caught.value.smtp_code, caught.value.smtp_error) == expected("smtp.mailbox_full")
