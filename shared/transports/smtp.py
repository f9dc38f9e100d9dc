"""SMTP submission with ``AUTH XOAUTH2`` (smtp.office365.com:587), sessions pooled per mailbox.

smtplib, synchronous: the cheapest client measured here (reference/performance-anchors.md: 1.5 ms
CPU per message on a reused session, against 4.1 ms for a new connection + STARTTLS + AUTH each time).

* STARTTLS always: a server that does not offer it is refused before any credential is sent.
* One authenticated session serves one mailbox (``user=`` in XOAUTH2 is the sending mailbox, or for a
  delegated mailbox the user who signed in for it, see ``shared.credentials``); at most
  ``OUTBOX_SMTP_CONNECTIONS`` (Exchange allows 3) per mailbox per process, in a bounded pool;
  sessions idle for ``OUTBOX_SMTP_IDLE_S`` are closed.
* A pooled session the server has dropped (421, disconnect) is replaced once, but only while the
  message body has not been sent. A drop after the body is ambiguous: ``maybe_delivered``.
* ``535 5.7.3``: the token is dropped and AUTH is tried once more with a fresh one, then the
  classified error is raised (the catalog's hint lists the causes Exchange does not tell apart).

The MAIL/RCPT/DATA steps are spelled out (instead of ``sendmail``) so that every reply is classified
with the stage it answers, and so that "before" and "after" the body are told apart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import classify
from shared.errors import OutboxError
from shared.pacing import mailbox_busy
from shared.transports import xoauth2
from shared.transports.base import BlobSource, SendResult, load_blobs, pause_mailbox

if TYPE_CHECKING:
    from shared.credentials import Credentials
    from shared.message import Message
    from shared.pacing import Pacing
    from shared.settings import Settings

log = logging.getLogger(__name__)

_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")
# A session is not reused once its token is this close to expiry (Exchange may end the session then).
_TOKEN_REUSE_MARGIN_S = 60.0
# How long one look for a shared connection slot waits before the pool is checked again.
_SLOT_STEP_S = 0.25
STARTTLS_NOT_OFFERED = "outbox.starttls_not_offered"


class _Reconnect(Exception):
    """The session died before the message body was sent: safe to try a fresh session."""

    def __init__(self, cause: OutboxError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass(eq=False)
class _Session:
    smtp: smtplib.SMTP
    mailbox: str
    token_expires_on: float
    last_used: float
    sent: int = 0


@dataclass(eq=False)
class _Pool:
    key: str  # the mailbox, lower case
    limit: int
    idle: deque[_Session] = field(default_factory=deque)
    open: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


class SmtpTransport:
    name = "smtp"

    def __init__(
        self,
        settings: Settings,
        credentials: Credentials,
        pacing: Pacing,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._pacing = pacing
        self._clock = clock
        self._wall = wall_clock
        self._context: ssl.SSLContext = settings.ssl_context()
        self._local_hostname = socket.gethostname() or "localhost"  # getfqdn() can block on DNS
        self._pools: dict[str, _Pool] = {}
        self._pools_lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self.sessions_opened = 0  # connections made (benchmarks and tests read it)
        # Shared slots (OUTBOX_SLOTS=blob): an idle session holds a connection other instances could use,
        # at Exchange too, so it is closed as soon as its slot would be given back.
        self._idle_s = min(settings.smtp_idle_s, pacing.smtp_slots.idle_s)

    # -- Transport API --------------------------------------------------------------------------

    def send(self, message: Message, *, internet_message_id: str, blobs: BlobSource | None) -> SendResult:
        from shared import render_mime

        started = time.perf_counter()
        mailbox = message.sender.address
        message = load_blobs(message, blobs)
        payload = render_mime.to_bytes(render_mime.render_mime(message, message_id=internet_message_id))
        recipients = render_mime.envelope_recipients(message)
        self._pacing.smtp.spend(mailbox, holder=internet_message_id)
        reply = self._deliver(mailbox, recipients, payload)
        return SendResult(
            transport="smtp",
            mailbox=mailbox,
            internet_message_id=internet_message_id,
            request_id=reply[:200] or None,
            client_request_id=None,
            duration_ms=(time.perf_counter() - started) * 1000,
            path="smtp",
        )

    def find_sent(self, message: Message, *, internet_message_id: str) -> bool | None:
        """SMTP submissions leave no copy outbox may rely on (see docs/transports.md)."""
        return None

    def close(self) -> None:
        self._stop.set()
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            with pool.cond:
                sessions = list(pool.idle)
                pool.idle.clear()
                pool.open -= len(sessions)
                pool.cond.notify_all()
            self._quit_all(pool.key, sessions)
        if self._reaper is not None:
            self._reaper.join(timeout=5)

    def open_sessions(self, mailbox: str) -> int:
        pool = self._pools.get(mailbox.lower())
        return pool.open if pool else 0

    # -- one message ----------------------------------------------------------------------------

    def _deliver(self, mailbox: str, recipients: list[str], payload: bytes) -> str:
        reconnected = False
        while True:
            session = self._checkout(mailbox)
            try:
                reply = self._transaction(session, mailbox, recipients, payload)
            except _Reconnect as exc:
                self._discard(session)
                if reconnected:
                    raise exc.cause from None
                reconnected = True
                log.info("SMTP session for %s was closed by the server; reconnecting once", mailbox)
                continue
            except OutboxError as err:
                self._after_failure(session, err)
                if err.category == "throttled":
                    pause_mailbox(self._pacing.smtp, mailbox, err, self._settings)
                raise
            except BaseException:
                self._discard(session)
                raise
            session.sent += 1
            self._checkin(session)
            return reply

    def _transaction(self, session: _Session, mailbox: str, recipients: list[str], payload: bytes) -> str:
        smtp = session.smtp
        options = [f"SIZE={len(payload)}"] if smtp.has_extn("size") else []
        self._expect(session, smtp.mail, "mail", (250,), mailbox, options)
        for rcpt in recipients:
            self._expect(session, smtp.rcpt, "rcpt", (250, 251), rcpt)
        self._expect(session, lambda: smtp.docmd("data"), "data", (354,))
        body = _DOT_AT_LINE_START.sub(b"..", payload)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        try:
            smtp.send(body + b".\r\n")
            code, text = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # The body (or part of it) is out and no verdict came: the server may have queued it.
            raise classify.classify_transport_exception(exc, transport="smtp", request_sent=True) from exc
        if code != 250:
            err = classify.classify_smtp_reply(code, _text(text), stage="data")
            raise err.replace(request_sent=True)
        return _text(text)

    def _expect(self, session: _Session, command: Callable[..., tuple[int, bytes]], stage: str,
                ok: tuple[int, ...], *args: object) -> None:
        try:
            code, text = command(*args)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            cause = classify.classify_transport_exception(exc, transport="smtp", request_sent=False)
            raise _Reconnect(cause) from exc
        if code in ok:
            return
        err = classify.classify_smtp_reply(code, _text(text), stage=stage)
        if code == 421:
            raise _Reconnect(err)
        raise err

    def _after_failure(self, session: _Session, err: OutboxError) -> None:
        """A refused command leaves the session usable after RSET; anything odd closes it."""
        if err.status is None or err.status == 421 or err.maybe_delivered:
            # No reply at all (connection trouble) or the server is closing: the session is done.
            self._discard(session)
            return
        try:
            code, _ = session.smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code == 250:
            self._checkin(session)
        else:
            self._discard(session)

    # -- sessions ---------------------------------------------------------------------------------

    def _pool(self, mailbox: str) -> _Pool:
        key = mailbox.lower()
        pool = self._pools.get(key)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = _Pool(key, self._settings.smtp_connections)
                    self._start_reaper()
        return pool

    def _checkout(self, mailbox: str) -> _Session:
        pool = self._pool(mailbox)
        wait_s = max(self._settings.pacing_max_wait_s, self._settings.smtp_timeout_s)
        deadline = time.monotonic() + wait_s
        stale: list[_Session] = []
        session: _Session | None = None
        with pool.cond:
            while True:
                session = self._reuse(pool, stale)
                if session is not None or pool.open < pool.limit:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not pool.cond.wait(remaining):
                    if pool.idle or pool.open < pool.limit:
                        continue
                    self._quit_all(mailbox, stale)
                    raise self._busy(pool, mailbox, wait_s)
            if session is None:
                pool.open += 1  # reserve the connection before making it, outside the lock
        self._quit_all(mailbox, stale)
        if session is not None:
            return session
        try:
            # The token before the slot: an instance's first one (Key Vault, then Entra) takes 0.3-0.4 s,
            # a connection slot every instance waits for; cached, this is a dictionary lookup.
            self._credentials.for_mailbox(mailbox).token("smtp")
        except BaseException:
            with pool.cond:
                pool.open -= 1
                pool.cond.notify()
            raise
        # A connection also needs one of the mailbox's shared slots (every instance's connections count).
        # Taken in short steps: a session of this process that frees meanwhile serves us instead.
        slots = self._pacing.smtp_slots
        while not slots.take(pool.key, min(_SLOT_STEP_S, max(0.0, deadline - time.monotonic()))):
            with pool.cond:
                session = self._reuse(pool, stale)
                if session is not None or time.monotonic() >= deadline:
                    pool.open -= 1  # the reservation is not needed (or not to be had)
                    pool.cond.notify()
            self._quit_all(mailbox, stale)
            if session is not None:
                return session
            if time.monotonic() >= deadline:
                raise self._busy(pool, mailbox, wait_s, shared=True)
        try:
            return self._open(mailbox)
        except BaseException:
            slots.give_back(pool.key)
            with pool.cond:
                pool.open -= 1
                pool.cond.notify()
            raise

    def _reuse(self, pool: _Pool, stale: list[_Session]) -> _Session | None:
        """An idle session fit for reuse (under ``pool.cond``); unfit ones go to ``stale``."""
        now, wall = self._clock(), self._wall()
        while pool.idle:
            candidate = pool.idle.pop()  # most recently used first: the warmest connection
            if self._reusable(candidate, now, wall):
                return candidate
            stale.append(candidate)
            pool.open -= 1
        return None

    def _quit_all(self, mailbox: str, sessions: list[_Session]) -> None:
        """Close sessions already taken off the pool's count, and give back their shared slots."""
        for s in sessions:
            _quit(s)
            self._pacing.smtp_slots.give_back(mailbox.lower())
        sessions.clear()

    @staticmethod
    def _busy(pool: _Pool, mailbox: str, wait_s: float, *, shared: bool = False) -> OutboxError:
        if shared:
            return mailbox_busy(
                "smtp", f"every SMTP connection slot for {mailbox} stayed held by other instances for {wait_s:g} s",
                "Exchange allows 3 connections per mailbox across all instances (OUTBOX_SLOTS=blob); re-queued",
            )
        return mailbox_busy(
            "smtp", f"{pool.limit} SMTP sessions for {mailbox} stayed busy for {wait_s:g} s",
            "OUTBOX_SMTP_CONNECTIONS caps sessions per mailbox (Exchange allows 3); re-queued",
        )

    def _reusable(self, session: _Session, now: float, wall: float) -> bool:
        return (
            now - session.last_used < self._idle_s
            and session.token_expires_on - _TOKEN_REUSE_MARGIN_S > wall
        )

    def _checkin(self, session: _Session) -> None:
        if self._stop.is_set():  # closed while this session was in use
            self._discard(session)
            return
        pool = self._pool(session.mailbox)
        session.last_used = self._clock()
        with pool.cond:
            pool.idle.append(session)
            pool.cond.notify()

    def _discard(self, session: _Session) -> None:
        try:
            session.smtp.close()
        finally:
            pool = self._pool(session.mailbox)
            with pool.cond:
                pool.open -= 1
                pool.cond.notify()
            self._pacing.smtp_slots.give_back(pool.key)

    def _open(self, mailbox: str) -> _Session:
        """Connect, EHLO, STARTTLS (required), EHLO, AUTH XOAUTH2; one fresh-token retry after 535."""
        for attempt in (1, 2):
            credential = self._credentials.for_mailbox(mailbox)
            access = credential.token("smtp")
            smtp = self._connect()
            try:
                # user= is the mailbox for app-only, the signed-in user for delegated (MAIL FROM stays
                # the sending mailbox: a shared one needs the user's Send As grant).
                self._authenticate(smtp, credential.smtp_user, access.token)
            except OutboxError as err:
                _close_quietly(smtp)
                if attempt == 1 and err.refresh_credentials:
                    log.info("SMTP AUTH refused for %s (%s); retrying once with a fresh token", mailbox, err.code)
                    credential.invalidate("smtp", access.token)
                    continue
                raise
            except BaseException:
                _close_quietly(smtp)
                raise
            with self._pools_lock:
                self.sessions_opened += 1
            return _Session(smtp, mailbox.lower(), access.expires_on, self._clock())
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> smtplib.SMTP:
        return connect(self._settings, local_hostname=self._local_hostname)

    def _authenticate(self, smtp: smtplib.SMTP, mailbox: str, token: str) -> None:
        require_starttls(smtp, self._settings)
        start_tls(smtp, self._context)
        authenticate(smtp, mailbox, token)

    # -- idle sessions ----------------------------------------------------------------------------

    def _start_reaper(self) -> None:
        if self._reaper is None and self._idle_s > 0:
            self._reaper = threading.Thread(target=self._reap_loop, name="outbox-smtp-idle", daemon=True)
            self._reaper.start()

    def _reap_loop(self) -> None:
        interval = max(0.05, self._idle_s / 2)
        while not self._stop.wait(interval):
            self.close_idle()

    def close_idle(self) -> int:
        """Close sessions idle for ``OUTBOX_SMTP_IDLE_S`` or longer; returns how many were closed."""
        now, wall = self._clock(), self._wall()
        closed: list[_Session] = []
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            with pool.cond:
                keep = deque(s for s in pool.idle if self._reusable(s, now, wall))
                gone = [s for s in pool.idle if s not in keep]
                pool.open -= len(gone)
                pool.idle = keep
                pool.cond.notify_all()
            closed.extend(gone)
            self._quit_all(pool.key, gone)
        return len(closed)


# -- one session's steps: the transport runs them to send, doctor runs them to probe -----------------


class _Client(smtplib.SMTP):
    """smtplib's client, keeping the server's greeting (its constructor connects and drops it).

    Connecting in the constructor also records the host name STARTTLS verifies the certificate against.
    """

    greeting = ""

    def connect(self, host: str = "localhost", port: int = 0,
                source_address: Any = None) -> tuple[int, bytes]:
        code, text = super().connect(host, port, source_address)
        self.greeting = _text(text)
        return code, text


class StepFailed(Exception):
    """A session step failed: which one, the classified error and the server's reply (when it gave one)."""

    def __init__(self, stage: str, error: OutboxError, found: Probe, reply: tuple[int, str] | None = None) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error
        self.found = found
        """What the steps before this one learnt."""
        self.reply = reply


def connect(settings: Settings, *, local_hostname: str) -> smtplib.SMTP:
    """A connection to the submission endpoint that the server greeted with 220."""
    try:
        return _Client(settings.smtp_host, settings.smtp_port, local_hostname=local_hostname,
                       timeout=settings.smtp_timeout_s)
    except smtplib.SMTPConnectError as exc:  # a banner other than 220
        raise classify.classify_smtp_reply(exc.smtp_code, _text(exc.smtp_error), stage="connect") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise classify.classify_transport_exception(exc, transport="smtp", request_sent=False) from exc


def require_starttls(smtp: smtplib.SMTP, settings: Settings) -> None:
    """EHLO, and refuse a server without STARTTLS: no credential ever goes over plain text."""
    try:
        _ehlo(smtp)
    except smtplib.SMTPResponseException as exc:
        raise classify.classify_smtp_reply(exc.smtp_code, _text(exc.smtp_error), stage="ehlo") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise classify.classify_transport_exception(exc, transport="smtp", request_sent=False) from exc
    if not smtp.has_extn("starttls"):
        raise OutboxError(
            "config",
            STARTTLS_NOT_OFFERED,
            transport="smtp",
            detail=f"{settings.smtp_host}:{settings.smtp_port} does not offer STARTTLS",
            hint=(
                "outbox never sends a token over an unencrypted connection: point OUTBOX_SMTP_HOST/"
                "OUTBOX_SMTP_PORT at the submission endpoint (smtp.office365.com:587)"
            ),
        )


def start_tls(smtp: smtplib.SMTP, context: ssl.SSLContext) -> None:
    """STARTTLS (the certificate checked against the host connected to), then EHLO again."""
    stage = "starttls"
    try:
        smtp.starttls(context=context)
        stage = "ehlo"
        _ehlo(smtp)
    except smtplib.SMTPResponseException as exc:
        raise classify.classify_smtp_reply(exc.smtp_code, _text(exc.smtp_error), stage=stage) from exc
    except (smtplib.SMTPException, OSError) as exc:
        # Disconnects, timeouts and ssl.SSLCertVerificationError (an OSError) end up here.
        raise classify.classify_transport_exception(exc, transport="smtp", request_sent=False) from exc


def authenticate(smtp: smtplib.SMTP, mailbox: str, token: str) -> tuple[int, str]:
    """AUTH XOAUTH2 as ``mailbox`` (``user=`` is the mailbox the session will send from); the 235 reply."""
    initial = xoauth2.initial_response(mailbox, token)
    try:
        # A failed XOAUTH2 may come back as a 334 challenge: the answer is an empty line.
        code, text = smtp.auth("XOAUTH2", lambda challenge=None: initial if challenge is None else "",
                               initial_response_ok=True)
        return code, _text(text)
    except smtplib.SMTPResponseException as exc:
        raise classify.classify_smtp_reply(exc.smtp_code, _text(exc.smtp_error), stage="auth") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise classify.classify_transport_exception(exc, transport="smtp", request_sent=False) from exc


def _ehlo(smtp: smtplib.SMTP) -> None:
    code, text = smtp.ehlo()
    if code != 250:
        raise classify.classify_smtp_reply(code, _text(text), stage="ehlo")


@dataclass
class Probe:
    """What a session that sends nothing learnt, step by step (``outbox doctor`` reports it)."""

    greeting: str = ""
    tls_version: str | None = None
    auth_mechanisms: tuple[str, ...] = ()
    authenticated: bool = False
    auth_reply: tuple[int, str] | None = None
    mail_reply: tuple[int, str] | None = None


def probe(settings: Settings, *, mailbox: str, sender: str, token: str | None) -> Probe:
    """Probe, don't send: connect, STARTTLS, AUTH XOAUTH2 as ``mailbox``, MAIL FROM ``sender``, RSET, QUIT.

    The same steps the transport runs before a message. Stops early (returning what it learnt) when there
    is no token or the server offers no XOAUTH2; raises :class:`StepFailed` naming the step that failed.
    """
    found = Probe()
    try:
        smtp = connect(settings, local_hostname=socket.gethostname() or "localhost")
    except OutboxError as err:
        raise StepFailed("connect", err, found) from err
    try:
        found.greeting = smtp.greeting if isinstance(smtp, _Client) else ""
        try:
            require_starttls(smtp, settings)
        except OutboxError as err:
            raise StepFailed("connect", err, found) from err
        try:
            start_tls(smtp, settings.ssl_context())
        except OutboxError as err:
            reply = (err.status, _reply_of(err.__cause__)) if err.status is not None else None
            raise StepFailed("starttls", err, found, reply) from err
        sock = smtp.sock
        found.tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        found.auth_mechanisms = tuple(str(smtp.esmtp_features.get("auth", "")).upper().split())
        if token is None or "XOAUTH2" not in found.auth_mechanisms:
            return found
        try:
            found.auth_reply = authenticate(smtp, mailbox, token)
        except OutboxError as err:
            reply = (err.status, _reply_of(err.__cause__)) if err.status is not None else None
            raise StepFailed("auth", err, found, reply) from err
        found.authenticated = True
        code, text = smtp.mail(sender)
        found.mail_reply = (code, _text(text))
        with contextlib.suppress(OSError, smtplib.SMTPException):
            smtp.rset()
        return found
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            _close_quietly(smtp)


def _reply_of(exc: BaseException | None) -> str:
    return _text(exc.smtp_error) if isinstance(exc, smtplib.SMTPResponseException) else ""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _close_quietly(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()


def _quit(session: _Session) -> None:
    """Polite QUIT for an idle session; a dead one is just closed."""
    smtp = session.smtp
    try:
        if smtp.sock is not None:
            smtp.sock.settimeout(2.0)
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        _close_quietly(smtp)

