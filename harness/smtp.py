"""The fake Exchange Online SMTP submission endpoint (smtp.office365.com:587), built on aiosmtpd.

It runs on the harness's service host loop as a plain TCP server and upgrades with STARTTLS using the
test CA's certificate, like Exchange:

* before TLS, EHLO offers ``STARTTLS`` and ``SIZE 157286400`` but no AUTH; ``AUTH`` answers
  ``504 5.7.4``; ``MAIL FROM`` answers ``530 5.7.57``;
* after TLS, EHLO offers ``AUTH LOGIN XOAUTH2``; XOAUTH2 (one line, or the two-step form with an empty
  ``334 `` challenge) is checked like Exchange checks it (``harness.smtp_auth``); ``AUTH LOGIN`` gets
  the post-retirement ``550 5.7.30``;
* MAIL FROM must be the authenticated mailbox or one it may send as (``550 5.7.60``); the From header is
  checked again at submission (``554 5.2.252 SendAsDenied``); recipients per message (``452 4.5.3``),
  message size (``552 5.3.4``), sender threads per mailbox (``432 4.3.2``), messages per minute
  (``451 4.7.500``, the catalog's documented assumption) and recipients per day (``554 5.2.0``);
* faults by stage (``connect``, ``ehlo``, ``starttls``, ``auth``, ``mail``, ``rcpt``, ``data``). A rule
  without ``operation`` applies at ``data`` (the fault engine's default SMTP operation), after the
  message body arrived: ``reply`` answers its catalog entry (nothing delivered unless
  ``params.delivered = "true"``), ``drop`` closes without an answer and without delivering,
  ``drop_after_body`` delivers (unless ``params.delivered = "false"``) and closes without an answer: the
  ambiguous case. Latency (rules and ``limits.smtp.latency_ms``) is slept before the stage's reply.

Every accepted message is recorded in ``runtime.state`` with its envelope and raw MIME. It counts as
saved to Sent Items only when the scenario says so (``exchange.smtp_copies_to_sent_items``).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import email.parser
import email.policy
import email.utils
import secrets
import ssl
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from harness import replies
from harness.faults import Fault
from harness.runtime import FAKE_EXCHANGE_HOST, HarnessRuntime
from harness.scenario import Scenario
from harness.server import Endpoint
from harness.smtp_auth import BadUser, ExchangeAuthenticator, Identity, Unparsable, parse_xoauth2
from harness.state import Delivery
from harness.throttle import SlidingWindow, SmtpThrottle
from shared import catalog

SERVICE = "smtp"
STAGES = ("connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data")
ADVERTISED_SIZE = 157_286_400
# Realistic XOAUTH2 lines are a few KB; Exchange accepts them, aiosmtpd's 512-byte default does not.
AUTH_LINE_LIMIT = 64 * 1024
COMMAND_LINE_LIMIT = 512 + 26 + 10  # RFC 5321 plus the SIZE= and SMTPUTF8 extensions, as aiosmtpd counts
DAY_S = 86_400.0
_B64_USERNAME = "VXNlcm5hbWU6"  # "Username:"
_B64_PASSWORD = "UGFzc3dvcmQ6"  # "Password:"
# aiosmtpd's fixed texts for replies it sends itself, in Exchange's words. Sequence errors name the
# catalog row to use once the catalog has one (proposed names; until then Exchange's text below).
_EXCHANGE_WORDING: dict[str, tuple[str | None, str]] = {
    "220 Ready to start TLS": (None, "220 2.0.0 SMTP server ready"),
    "354 End data with <CR><LF>.<CR><LF>": (None, "354 Start mail input; end with <CRLF>.<CRLF>"),
    "503 Error: need MAIL command": ("smtp.need_mail", "503 5.5.2 Need mail command"),
    "503 Error: need RCPT command": ("smtp.need_rcpt", "503 5.5.2 Need rcpt command"),
    "503 Error: nested MAIL command": ("smtp.bad_sequence", "503 5.5.2 Sender already specified"),
    "503 Error: send HELO first": ("smtp.send_hello_first", "503 5.5.2 Send hello first"),
    "503 Error: send EHLO first": ("smtp.send_hello_first", "503 5.5.2 Send hello first"),
}


def _exchange_wording(status: str) -> str:
    wording = _EXCHANGE_WORDING.get(status)
    if wording is None:
        return status
    name, text = wording
    if name is not None and name in catalog.BY_NAME:
        return _reply(name)
    return text


def _reply(name: str, **fmt: object) -> str:
    code, text = replies.smtp_reply(name, **({"host": FAKE_EXCHANGE_HOST} | fmt))
    return f"{code} {text}"


def _fault_reply(fault: Fault) -> str:
    assert fault.catalog is not None
    params = {k: v for k, v in fault.params.items() if k != "delivered"}
    return _reply(fault.catalog, **params)


def _delivered(fault: Fault, default: bool) -> bool:
    value = fault.params.get("delivered")
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


class SmtpFake:
    """What every connection shares: limits, token cache, the runtime. Lives on the loop thread."""

    def __init__(self, runtime: HarnessRuntime, tls_context: ssl.SSLContext | None = None) -> None:
        self.runtime = runtime
        self.tls_context = tls_context or runtime.pki.server_ssl_context()
        self.authenticator = ExchangeAuthenticator(runtime)
        self._limits_seen = runtime.scenario.limits.smtp
        self.throttle = SmtpThrottle(self._limits_seen)
        self.daily = SlidingWindow(self._limits_seen.recipients_per_day, DAY_S)
        runtime.on_scenario_change(self._scenario_changed)
        runtime.on_reset(self.reset)

    @property
    def scenario(self) -> Scenario:
        return self.runtime.scenario

    def _scenario_changed(self, scenario: Scenario) -> None:
        self.authenticator.forget()
        if scenario.limits.smtp != self._limits_seen:
            self.reset()

    def reset(self) -> None:
        """Fresh windows and thread counts (connections keep releasing the limiter they took)."""
        self._limits_seen = self.runtime.scenario.limits.smtp
        self.throttle = SmtpThrottle(self._limits_seen)
        self.daily = SlidingWindow(self._limits_seen.recipients_per_day, DAY_S)
        self.authenticator.forget()

    def protocol(self) -> ExchangeSMTP:
        return ExchangeSMTP(self)


class _Hooks:
    """aiosmtpd calls ``handle_*`` on its handler; they forward to the connection (the server)."""

    async def handle_MAIL(self, server: ExchangeSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        return await server.on_mail(envelope, address, options)

    async def handle_RCPT(self, server: ExchangeSMTP, session: Session, envelope: Envelope, address: str,
                          options: list[str]) -> str:
        return await server.on_rcpt(envelope, address)

    async def handle_DATA(self, server: ExchangeSMTP, session: Session, envelope: Envelope) -> str:
        return await server.on_data(envelope)

    async def handle_RSET(self, server: ExchangeSMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Resetting"

    async def handle_NOOP(self, server: ExchangeSMTP, session: Session, envelope: Envelope, arg: str) -> str:
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: ExchangeSMTP, session: Session, envelope: Envelope) -> str:
        return "221 2.0.0 Service closing transmission channel"


_HOOKS = _Hooks()


class ExchangeSMTP(SMTP):
    """One client connection, answering like Exchange Online's client submission endpoint."""

    # The StreamReader limit: long enough for an XOAUTH2 line (aiosmtpd uses it for every line).
    line_length_limit = AUTH_LINE_LIMIT

    def __init__(self, fake: SmtpFake) -> None:
        self.fake = fake
        self.identity: Identity | None = None
        self._greeted = False
        self._thread_slot: tuple[SmtpThrottle, str] | None = None
        now = dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        super().__init__(
            _HOOKS,
            hostname=FAKE_EXCHANGE_HOST,
            ident=f"Microsoft ESMTP MAIL Service ready at {now}",
            tls_context=fake.tls_context,
            require_starttls=False,  # Exchange answers AUTH/MAIL before TLS with its own codes
            auth_required=False,
            auth_require_tls=True,
            data_size_limit=None,  # sizes are checked here, with Exchange's replies
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=fake.runtime.host.loop,
        )
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LINE_LIMIT)
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT
        # Before (re-)EHLO aiosmtpd applies this one limit to every line; a long AUTH line sent without
        # EHLO after STARTTLS must reach the "send hello first" answer, not "line too long".
        self.command_size_limit = AUTH_LINE_LIMIT

    # -- plumbing -------------------------------------------------------------------------------------
    @property
    def runtime(self) -> HarnessRuntime:
        return self.fake.runtime

    @property
    def mailbox(self) -> str | None:
        return self.identity.mailbox if self.identity else None

    def _record(self, stage: str, status: int | str) -> None:
        self.runtime.state.record_request(
            SERVICE, stage, status, mailbox=self.mailbox, app_id=self.identity.app_id if self.identity else None
        )

    def _drop(self) -> None:
        """Close without a reply; stop reading (the client sees EOF / reset)."""
        if self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()  # aiosmtpd types it BaseTransport; TCP gives Transport
        raise asyncio.CancelledError

    async def _stage_fault(self, stage: str, recipients: list[str] | None = None) -> Fault | None:
        """The fault for this stage: latency is served here; other actions go back to the caller.

        The engine gives operation-less rules to ``data`` (``harness.faults.DEFAULT_OPERATIONS``), so
        every stage can ask it; the longest latency rule is added to the base latency (``limits.smtp.latency_ms``).
        """
        fault = self.runtime.fault(SERVICE, mailbox=self.mailbox, recipients=recipients or (), operation=stage)
        if fault is None:
            return None
        if fault.action == "latency":
            await fault.delay()
            return None
        return fault

    async def _simple_stage(self, stage: str, recipients: list[str] | None = None) -> str | None:
        """Faults at stages without a body: the reply to send instead, or a drop."""
        fault = await self._stage_fault(stage, recipients)
        if fault is None:
            return None
        if fault.action in ("drop", "drop_after_body"):
            await fault.delay()
            self._record(stage, "dropped")
            self._drop()
        await fault.delay()
        reply = _fault_reply(fault)
        self._record(stage, reply[:3])
        return reply

    async def push(self, status: Any) -> None:
        if not self._greeted:
            # The first push is the 220 banner: the place for connect-stage faults.
            self._greeted = True
            replacement = await self._simple_stage("connect")
            if replacement is not None:
                await super().push(replacement)
                if self.transport is not None:
                    self.transport.close()
                raise asyncio.CancelledError
        if isinstance(status, str):
            status = _exchange_wording(status)
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        self._release_thread()
        super().connection_lost(error)

    def _release_thread(self) -> None:
        if self._thread_slot is not None:
            throttle, key = self._thread_slot
            throttle.threads.release(key)
            self._thread_slot = None

    def _hold_thread(self) -> bool:
        """A sender thread for the mailbox (at most N per mailbox across connections)."""
        if self._thread_slot is not None:
            return True
        assert self.identity is not None
        throttle = self.fake.throttle
        key = self.identity.mailbox.lower()
        if throttle.threads.try_acquire(key):
            self._thread_slot = (throttle, key)
            return True
        return False

    # -- EHLO / STARTTLS ----------------------------------------------------------------------------------
    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Invalid domain name")
            return
        replacement = await self._simple_stage("ehlo")
        if replacement is not None:
            await self.push(replacement)
            return
        assert self.session is not None
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        peer = self.session.peer[0] if isinstance(self.session.peer, tuple) else "127.0.0.1"
        lines = [f"{self.hostname} Hello [{peer}]", f"SIZE {ADVERTISED_SIZE}", "PIPELINING", "ENHANCEDSTATUSCODES"]
        lines.append("AUTH LOGIN XOAUTH2" if self._tls_protocol else "STARTTLS")
        lines += ["8BITMIME", "SMTPUTF8"]
        for line in lines[:-1]:
            await self.push(f"250-{line}")
        await self.push(f"250 {lines[-1]}")

    async def smtp_STARTTLS(self, arg: str) -> None:
        replacement = await self._simple_stage("starttls")
        if replacement is not None:
            await self.push(replacement)
            return
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 Bad sequence of commands")
            return
        await super().smtp_STARTTLS(arg)

    # -- AUTH -------------------------------------------------------------------------------------------
    async def _auth_line(self, challenge: str) -> str | None:
        """Send a 334 challenge and read the client's line (None: the client cancelled with '*')."""
        await self.push(f"334 {challenge}")
        line = (await self._reader.readline()).strip().decode("ascii", errors="replace")
        return None if line == "*" else line

    async def smtp_AUTH(self, arg: str) -> None:
        if await self.check_helo_needed("EHLO"):
            return
        assert self.session is not None
        if not self._tls_protocol:
            self._record("auth", 504)
            await self.push(_reply("smtp.auth_before_tls"))
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 Already authenticated")
            return
        args = (arg or "").split()
        if not args:
            await self.push("501 5.5.4 Invalid arguments")
            return
        mechanism = args[0].upper()
        if mechanism not in ("XOAUTH2", "LOGIN"):
            await self.push(_reply("smtp.auth_before_tls"))
            return
        replacement = await self._simple_stage("auth")
        if replacement is not None:
            await self.push(replacement)
            return
        if mechanism == "LOGIN":
            await self._auth_login(args)
        else:
            await self._auth_xoauth2(args)

    async def _auth_login(self, args: list[str]) -> None:
        # Basic authentication is retired for client submission: ask for both, refuse both.
        if len(args) < 2 and await self._auth_line(_B64_USERNAME) is None:
            await self.push("501 5.7.0 Auth aborted")
            return
        if await self._auth_line(_B64_PASSWORD) is None:
            await self.push("501 5.7.0 Auth aborted")
            return
        self._record("auth", 550)
        await self.push(_reply("smtp.basic_auth_disabled"))

    async def _auth_xoauth2(self, args: list[str]) -> None:
        blob = args[1] if len(args) > 1 else await self._auth_line("")
        if blob is None:
            await self.push("501 5.7.0 Auth aborted")
            return
        try:
            login = parse_xoauth2(blob)
        except BadUser:
            self._record("auth", 501)
            await self.push(_reply("smtp.bad_user"))
            return
        except Unparsable:
            self._record("auth", 535)
            await self.push(_reply("smtp.auth_failed"))
            return
        failure, identity = self.fake.authenticator.decide(login)
        if failure is not None or identity is None:
            self._record("auth", 535)
            await self.push(_reply(failure or "smtp.auth_failed"))
            return
        assert self.session is not None
        self.session.authenticated = True
        self.session.auth_data = identity  # type: ignore[assignment]  # aiosmtpd declares Session.auth_data = None
        self.identity = identity
        self._hold_thread()
        self._record("auth", 235)
        await self.push("235 2.7.0 Authentication successful")

    # -- envelope -------------------------------------------------------------------------------------
    async def on_mail(self, envelope: Envelope, address: str, options: list[str]) -> str:
        if self.identity is None:
            self._record("mail", 530)
            return _reply("smtp.not_authenticated")
        replacement = await self._simple_stage("mail")
        if replacement is not None:
            return replacement
        size = next((o.partition("=")[2] for o in options if o.upper().startswith("SIZE=")), "")
        if size.isdigit() and int(size) > self.fake.scenario.limits.smtp.max_message_bytes:
            self._record("mail", 552)
            return _reply("smtp.message_too_large")
        if not self._may_send_as(self.identity, address):
            self._record("mail", 550)
            return _reply("smtp.send_as_denied")
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def on_rcpt(self, envelope: Envelope, address: str) -> str:
        replacement = await self._simple_stage("rcpt", [address])
        if replacement is not None:
            return replacement
        if len(envelope.rcpt_tos) >= self.fake.scenario.limits.smtp.recipients_per_message:
            self._record("rcpt", 452)
            return _reply("smtp.too_many_recipients")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    # -- DATA -----------------------------------------------------------------------------------------
    async def on_data(self, envelope: Envelope) -> str:
        assert self.identity is not None
        recipients = list(envelope.rcpt_tos)
        fault = await self._stage_fault("data", recipients)
        if fault is None:
            return self._submit(envelope)
        if fault.action == "drop":
            await fault.delay()
            self._record("data", "dropped")
            self._drop()
        if fault.action == "drop_after_body":
            if _delivered(fault, True):
                self._submit(envelope)
            await fault.delay()
            self._record("data", "dropped")
            self._drop()
        if _delivered(fault, False):
            self._submit(envelope)
        await fault.delay()
        reply = _fault_reply(fault)
        self._record("data", reply[:3])
        return reply

    def _may_send_as(self, identity: Identity, address: str) -> bool:
        """App-only: the mailbox or the app's Send As list. Delegated: the ``user=`` mailbox or an address
        it may send as (its Send As grants)."""
        scenario = self.fake.scenario
        if identity.delegated:
            return scenario.may_send_as(identity.mailbox, address)
        return scenario.smtp_may_send_as(identity.app_id, identity.mailbox, address)

    def _submit(self, envelope: Envelope) -> str:
        """Exchange's submission checks, then the delivery; returns the reply to DATA."""
        identity = self.identity
        assert identity is not None
        scenario = self.fake.scenario
        limits = scenario.limits.smtp
        content: bytes = envelope.original_content or b""
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
        reply: str | None = None
        carried_over_s = 0.0
        if len(content) > limits.max_message_bytes:
            reply = _reply("smtp.message_too_large")
        elif not self._hold_thread():
            reply = _reply(f"smtp.{limits.concurrency_reply}")
        else:
            header_from = email.utils.parseaddr(headers.get("From", ""))[1]
            if header_from and not self._may_send_as(identity, header_from):
                reply = _reply("smtp.send_as_denied_submission", mailbox=identity.mailbox, sender=header_from)
            elif self.fake.daily.wait(identity.mailbox.lower(), len(envelope.rcpt_tos)) > 0:
                reply = _reply("smtp.submission_quota")
            else:
                wait = self.fake.throttle.take_message(identity.mailbox)
                if wait > 0 and limits.over_rate == "refuse":
                    reply = _reply("smtp.rate_limited")
                else:
                    # Over the rate, Exchange accepts and carries the message over to a later window.
                    carried_over_s = wait
                    self.fake.daily.consume(identity.mailbox.lower(), len(envelope.rcpt_tos))
        if reply is not None:
            self._record("data", reply[:3])
            return reply
        message_id = (headers.get("Message-ID") or "").strip() or f"<{secrets.token_hex(16).upper()}@{FAKE_EXCHANGE_HOST}>"
        self.runtime.state.add_delivery(
            Delivery(
                transport="smtp",
                mailbox=identity.mailbox,
                app_id=identity.app_id,
                auth_type="delegated" if identity.delegated else "app",
                user=identity.user,
                recipients=tuple(envelope.rcpt_tos),
                subject=str(headers.get("Subject", "")),
                sender=email.utils.parseaddr(headers.get("From", ""))[1] or str(envelope.mail_from),
                message_id=message_id,
                raw_mime=content,
                saved_to_sent_items=scenario.exchange.smtp_copies_to_sent_items,
                extra={"mailFrom": envelope.mail_from, "rcptTo": list(envelope.rcpt_tos),
                       **({"carriedOverS": round(carried_over_s, 3)} if carried_over_s else {})},
            )
        )
        self._record("data", 250)
        return f"250 2.0.0 OK {message_id} [Hostname={FAKE_EXCHANGE_HOST}]"


def register(runtime: HarnessRuntime) -> Endpoint:
    """Serve the fake Exchange SMTP on the runtime's service host (service name "smtp", plain TCP +
    STARTTLS with the test CA's server certificate)."""
    fake = SmtpFake(runtime)
    return runtime.host.add_protocol_server(SERVICE, fake.protocol)
