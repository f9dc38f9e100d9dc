"""SMTP submission (STARTTLS + AUTH XOAUTH2) against the fake Exchange: sessions, retries, limits."""

from __future__ import annotations

import base64
import socketserver
import threading

import pytest

from shared.errors import OutboxError
from shared.pacing import PAUSED_CODE
from shared.senders import Senders
from shared.transports.smtp import SmtpTransport
from tests.integration.transport_support import SENDER, MemoryBlobs, from_threads, message

TOKEN_POST = "POST /{tenant}/oauth2/v2.0/token"




def smtp(senders: Senders) -> SmtpTransport:
    transport = senders.transport("smtp")
    assert isinstance(transport, SmtpTransport)
    return transport


def send(senders: Senders, msg, mid, blobs=None):
    return smtp(senders).send(msg, internet_message_id=mid, blobs=blobs)


def auth_attempts(fakes) -> int:
    return fakes.state.count("smtp", "auth")


def exchange_tokens(fakes) -> int:
    return fakes.state.count("entra", TOKEN_POST)


def test_happy_path_over_starttls_and_xoauth2(fakes, senders):
    msg, mid = message(
        bcc=["hidden@fabrikam.example"],
        html="<p>hi</p>",
        attachments=[{"name": "a.txt", "blob": "outbox-attachments/a.txt"}],
    )
    blobs = MemoryBlobs({"outbox-attachments/a.txt": b"from a blob"})
    result = send(senders, msg, mid, blobs)
    assert (result.transport, result.mailbox, result.path, result.internet_message_id) == ("smtp", SENDER, "smtp", mid)
    assert result.request_id.startswith("2.0.0") and mid in result.request_id
    [delivery] = fakes.deliveries(transport="smtp")
    assert delivery.mailbox == SENDER
    assert delivery.message_id == mid
    assert set(delivery.recipients) == {"ann@fabrikam.example", "hidden@fabrikam.example"}
    raw = delivery.raw_mime
    assert b"hidden@fabrikam.example" not in raw  # Bcc only in the envelope
    assert base64.b64encode(b"from a blob") in raw
    assert blobs.read_all_calls == ["outbox-attachments/a.txt"]
    assert smtp(senders).find_sent(msg, internet_message_id=mid) is None  # SMTP keeps no copy to look in


def test_session_is_reused_across_messages(fakes, senders):
    for i in range(5):
        send(senders, *message(f"r{i}"))
    assert len(fakes.deliveries()) == 5
    assert smtp(senders).sessions_opened == 1
    assert auth_attempts(fakes) == 1
    assert exchange_tokens(fakes) == 1


def test_535_retries_once_with_a_fresh_token(fakes, senders):
    fakes.set_fault(service="smtp", operation="auth", catalog="smtp.auth_failed", times=1)
    send(senders, *message())
    assert len(fakes.deliveries()) == 1
    assert auth_attempts(fakes) == 2
    assert exchange_tokens(fakes) == 2  # the first token was dropped


def test_535_twice_is_an_auth_error_with_the_checklist(fakes, senders):
    fakes.apply_scenario({"apps": {"outbox-sender": {"exchange_consent": False}}})  # no SMTP.SendAsApp
    with pytest.raises(OutboxError) as info:
        send(senders, *message())
    err = info.value
    assert (err.category, err.status, err.code, err.transport) == ("auth", 535, "5.7.3", "smtp")
    assert "SMTP.SendAsApp" in err.hint and "New-ServicePrincipal" in err.hint
    assert not err.request_sent and not err.maybe_delivered
    assert auth_attempts(fakes) == 2
    assert exchange_tokens(fakes) == 2


def test_smtp_auth_disabled_for_the_mailbox_is_permission_with_the_fix(fakes, senders):
    fakes.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    with pytest.raises(OutboxError) as info:
        send(senders, *message())
    err = info.value
    assert (err.category, err.code, err.retryable) == ("permission", "5.7.139", False)
    assert "Set-CASMailbox" in err.hint
    assert auth_attempts(fakes) == 1  # not a token problem: no retry


def test_never_more_than_three_sessions_per_mailbox_under_eight_threads(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_SMTP_TIMEOUT_S="10")
    fakes.set_fault(service="smtp", operation="data", action="latency", latency_s=0.05)
    errors = from_threads(lambda key: send(senders, *message(key)))
    assert not errors
    assert len(fakes.deliveries(transport="smtp")) == 24
    assert 2 <= smtp(senders).sessions_opened <= 3
    assert smtp(senders).open_sessions(SENDER) <= 3
    assert fakes.state.count("smtp", "status:432") == 0  # Exchange's 4th-connection reply never seen


def test_dropped_session_before_the_body_reconnects_and_sends_once(fakes, senders):
    send(senders, *message("first"))
    fakes.set_fault(service="smtp", operation="mail", action="drop", times=1)
    send(senders, *message("second"))
    assert [d.subject for d in fakes.deliveries()] == ["subject first", "subject second"]
    assert smtp(senders).sessions_opened == 2


def test_421_before_the_body_reconnects(fakes, senders):
    send(senders, *message("first"))
    fakes.set_fault(service="smtp", operation="mail", catalog="smtp.service_closing", times=1)
    send(senders, *message("second"))
    assert len(fakes.deliveries()) == 2
    assert smtp(senders).sessions_opened == 2


def test_drop_after_the_body_is_maybe_delivered(fakes, senders):
    fakes.set_fault(service="smtp", operation="data", action="drop_after_body", times=1)
    with pytest.raises(OutboxError) as info:
        send(senders, *message())
    err = info.value
    assert err.request_sent and err.maybe_delivered and err.retryable
    assert len(fakes.deliveries()) == 1  # it was delivered: the pipeline must not blindly resend
    send(senders, *message("next"))  # the broken session was discarded, a new one works
    assert smtp(senders).sessions_opened == 2


def test_mailbox_the_app_may_not_use_fails_at_auth(fakes, senders):
    with pytest.raises(OutboxError) as info:
        send(senders, *message(**{"from": "other@contoso.example"}))  # no FullAccess for the app
    assert (info.value.category, info.value.code) == ("auth", "5.7.3")
    assert not fakes.deliveries()


def test_refused_command_leaves_the_session_usable(fakes, senders):
    send(senders, *message("first"))
    fakes.set_fault(service="smtp", operation="mail", catalog="smtp.send_as_denied", times=1)
    with pytest.raises(OutboxError) as info:
        send(senders, *message("refused"))
    assert (info.value.category, info.value.code, info.value.request_sent) == ("permission", "5.7.60", False)
    send(senders, *message("after"))
    assert [d.subject for d in fakes.deliveries()] == ["subject first", "subject after"]
    assert smtp(senders).sessions_opened == 1  # RSET, same session


def test_rejection_after_data_is_not_ambiguous(fakes, senders):
    fakes.set_fault(service="smtp", operation="data", catalog="smtp.submission_quota", times=1)
    with pytest.raises(OutboxError) as info:
        send(senders, *message())
    err = info.value
    assert (err.category, err.code, err.maybe_delivered) == ("quota", "5.2.0", False)
    assert not fakes.deliveries()
    send(senders, *message("next"))
    assert smtp(senders).sessions_opened == 1  # RSET, same session


def test_rate_per_window_requeues_with_the_time_left(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_SMTP_RATE_PER_WINDOW="2", OUTBOX_SMTP_RATE_WINDOW_S="60")
    send(senders, *message("a"))
    send(senders, *message("b"))
    with pytest.raises(OutboxError) as info:
        send(senders, *message("c"))
    err = info.value
    assert (err.category, err.code, err.request_sent) == ("throttled", PAUSED_CODE, False)
    assert 55 <= err.retry_after <= 61  # the 60 s window plus a 0.6 s margin, in whole seconds
    assert len(fakes.deliveries()) == 2


def test_idle_sessions_are_closed(fakes, senders):
    now = [0.0]
    transport = SmtpTransport(senders.settings, senders.credentials, senders.pacing, clock=lambda: now[0])
    first, first_id = message()
    again, again_id = message("again")
    try:
        transport.send(first, internet_message_id=first_id, blobs=None)
        assert transport.open_sessions(SENDER) == 1
        now[0] = senders.settings.smtp_idle_s - 1
        assert transport.close_idle() == 0
        now[0] = senders.settings.smtp_idle_s + 1
        assert transport.close_idle() == 1
        assert transport.open_sessions(SENDER) == 0
        transport.send(again, internet_message_id=again_id, blobs=None)
        assert transport.sessions_opened == 2
    finally:
        transport.close()


class _PlainSmtp(socketserver.StreamRequestHandler):
    """An SMTP server that offers no STARTTLS (what a misconfigured relay or port 25 looks like)."""

    def handle(self) -> None:
        self.wfile.write(b"220 plain.example ESMTP\r\n")
        for line in self.rfile:
            verb = line.split(b" ", 1)[0].strip().upper()
            self.server.seen.append(verb)
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250-plain.example\r\n250 AUTH XOAUTH2\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 5.5.2 not here\r\n")


def test_server_without_starttls_is_refused_before_any_credential(fakes, make_senders):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _PlainSmtp)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        senders = make_senders(
            fakes, OUTBOX_SMTP_HOST="127.0.0.1", OUTBOX_SMTP_PORT=str(server.server_address[1])
        )
        with pytest.raises(OutboxError) as info:
            send(senders, *message())
        assert (info.value.category, info.value.code) == ("config", "outbox.starttls_not_offered")
        assert b"AUTH" not in server.seen
    finally:
        server.shutdown()
        server.server_close()


def test_timeout_waiting_for_the_data_verdict_is_maybe_delivered(fakes, make_senders):
    senders = make_senders(fakes, OUTBOX_SMTP_TIMEOUT_S="0.5")
    send(senders, *message("first"))
    fakes.set_fault(service="smtp", operation="data", action="latency", latency_s=1.5, times=1)
    with pytest.raises(OutboxError) as info:
        send(senders, *message("slow"))
    err = info.value
    assert err.request_sent and err.maybe_delivered and err.retryable
    send(senders, *message("after"))  # the timed-out session is not reused
    assert smtp(senders).sessions_opened == 2
    # (The fake drops a message whose client went away; Exchange may have queued it: hence "maybe".)
    assert "subject after" in {d.subject for d in fakes.deliveries(transport="smtp")}


def test_lines_starting_with_a_dot_arrive_whole(fakes, senders):
    # SMTP ends DATA at a line holding one dot and strips a leading dot from every other line
    # (RFC 5321 4.5.2), so the writer doubles each one; without that, ".signature" would lose its dot
    # and a lone "." would end the message early.
    text = "first line\n.signature\n.\n..two dots\nlast line"
    msg, mid = message("dots", text=text)
    send(senders, msg, mid)
    [delivery] = fakes.deliveries(transport="smtp")
    body = delivery.raw_mime.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"first line\r\n.signature\r\n.\r\n..two dots\r\nlast line")


def test_probe_runs_the_session_steps_and_sends_nothing(fakes, senders):
    from shared.transports.smtp import probe

    token = senders.tokens.token(senders.settings.smtp_scope).token
    found = probe(senders.settings, mailbox=SENDER, sender=SENDER, token=token)
    assert found.greeting  # the text of the 220 greeting, which doctor quotes
    assert found.tls_version in ("TLSv1.2", "TLSv1.3") and "XOAUTH2" in found.auth_mechanisms
    assert found.authenticated and found.auth_reply[0] == 235
    assert found.mail_reply[0] == 250
    assert fakes.deliveries() == []
    assert auth_attempts(fakes) == 1


def test_probe_names_the_step_that_failed(fakes, senders):
    from shared.transports.smtp import StepFailed, probe

    fakes.apply_scenario({"mailboxes": {SENDER: {"smtp_auth_enabled": False}}})
    token = senders.tokens.token(senders.settings.smtp_scope).token
    with pytest.raises(StepFailed) as info:
        probe(senders.settings, mailbox=SENDER, sender=SENDER, token=token)
    failed = info.value
    assert (failed.stage, failed.error.catalog, failed.reply[0]) == ("auth", "smtp.auth_disabled_mailbox", 535)
    assert failed.found.tls_version and not failed.found.authenticated
