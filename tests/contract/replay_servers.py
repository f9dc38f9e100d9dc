"""Independent stand-ins for Exchange SMTP and Graph ``sendMail`` that answer scripted replies.

They are not the harness: each reply is written in the test, from reference/m365-send-errors.md, so the
classification outbox makes is checked against the reference's words rather than against outbox's own
catalog. Both speak TLS with a CA of their own (trustme), which the test adds to OUTBOX_CA_BUNDLE.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import re
import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

SMTP_STAGES = ("auth", "mail", "rcpt", "data")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Script:
    """Replies per mailbox: SMTP ``{stage: "NNN text"}``; Graph ``(status, headers, body)``."""

    smtp: dict[str, dict[str, str]] = field(default_factory=dict)
    graph: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    entra: tuple[int, dict[str, Any]] | None = None
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    # What each mailbox's last request carried: {"token": bearer token, "client-request-id": ...}.
    seen: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, mailbox: str, what: str) -> None:
        with self.lock:
            self.calls[(mailbox.lower(), what)] += 1


class _SmtpHandler:
    def __init__(self, script: Script) -> None:
        self.script = script

    def _reply(self, mailbox: str, stage: str) -> str | None:
        self.script.count(mailbox, stage)
        return self.script.smtp.get(mailbox.lower(), {}).get(stage)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        if len(args) > 1:
            blob = args[1]
        else:
            raw = await server.challenge_auth("", encode_to_b64=False)
            blob = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            text = base64.b64decode(blob).decode()
        except ValueError:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode response")
        match = re.match(r"user=([^\x01]+)\x01auth=Bearer ([^\x01]+)\x01\x01\Z", text)
        if not match:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.124 Invalid XOAUTH2 auth data - User address provided is not valid")
        user = match.group(1)
        self.script.seen[user.lower()] = {"token": match.group(2)}
        reply = self._reply(user, "auth")
        if reply:
            return AuthResult(success=False, handled=False, message=reply)
        return AuthResult(success=True, auth_data=user)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._reply(address, "mail")
        if reply:
            return reply
        envelope.mail_from = address
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._reply(envelope.mail_from or "", "rcpt")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._reply(envelope.mail_from or "", "data")
        return reply or "250 2.0.0 OK <queued> [Hostname=EXAMPLE.prod.outlook.com]"


class _GraphHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    script: Script

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if re.fullmatch(r"/[^/]+/oauth2/v2\.0/token", self.path.split("?")[0]):
            self.script.count("entra", "token")
            status, document = self.script.entra or (400, {"error": "invalid_request"})
            self._answer(status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(document).encode())
            return
        match = re.fullmatch(r"/v1\.0/users/([^/]+)/sendMail", self.path.split("?")[0])
        request_id = str(uuid.uuid4())
        client_request_id = self.headers.get("client-request-id") or str(uuid.uuid4())
        ids = {"request-id": request_id, "client-request-id": client_request_id}
        if not match:
            self._answer(404, ids, b"")
            return
        mailbox = match.group(1)
        self.script.count(mailbox, "sendMail")
        self.script.seen[mailbox.lower()] = {
            "token": (self.headers.get("Authorization") or "").removeprefix("Bearer "),
            "client-request-id": self.headers.get("client-request-id") or ""}
        reply = self.script.graph.get(mailbox.lower())
        if reply is None:
            self._answer(202, ids, b"")
            return
        status, headers, body = reply
        body = body.replace(b"{request-id}", request_id.encode()).replace(b"{client-request-id}",
                                                                          client_request_id.encode())
        self._answer(status, {**ids, **headers}, body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        discovery = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path)
        if discovery:  # what MSAL reads before it asks for a token
            base = f"https://{self.headers['Host']}/{discovery.group(1)}"
            document = {"token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                        "issuer": f"{base}/v2.0", "jwks_uri": f"{base}/discovery/v2.0/keys"}
            self._answer(200, {"Content-Type": "application/json"}, json.dumps(document).encode())
            return
        self._answer(200, {"Content-Type": "application/json"}, b'{"value": []}')  # Sent Items: nothing found


def graph_error(status: int, code: str, message: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Graph's documented error shape (innerError ids filled in by the server per request)."""
    body = {"error": {"code": code, "message": message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": "{request-id}",
        "client-request-id": "{client-request-id}"}}}
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


class _LongLines(SMTP):
    """Exchange accepts the long AUTH XOAUTH2 line of a real token; aiosmtpd's default limit does not."""

    line_length_limit = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: 65536)
        self.command_size_limit = 65536


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _LongLines(self.handler, **self.SMTP_kwargs)


def entra_error(status: int, error: str, code: int | None, description: str) -> tuple[int, dict[str, Any]]:
    """The token endpoint's documented error body."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = f"AADSTS{code}: {description}" if code else description
    body: dict[str, Any] = {
        "error": error,
        "error_description": f"{text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}",
        "error_codes": [code] if code else [],
        "timestamp": now, "trace_id": trace, "correlation_id": correlation,
    }
    if code:
        body["error_uri"] = f"https://login.microsoftonline.com/error?code={code}"
    return status, body


@dataclass
class ReplayServers:
    script: Script
    smtp_port: int
    graph_url: str
    ca_file: Path


@contextlib.contextmanager
def replay_servers(directory: Path, extra_ca_bundle: Path) -> Iterator[ReplayServers]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    cert.configure_cert(server_ctx)
    bundle = directory / "replay-ca-bundle.pem"
    bundle.write_bytes(Path(extra_ca_bundle).read_bytes() + b"\n" + ca.cert_pem.bytes())
    script = Script()

    smtp_port = free_port()
    controller = _Controller(
        _SmtpHandler(script), hostname="127.0.0.1", port=smtp_port, tls_context=server_ctx, require_starttls=True,
        auth_required=True, auth_require_tls=True, auth_exclude_mechanism=["LOGIN", "PLAIN"],
        ident="EXAMPLE.prod.outlook.com Microsoft ESMTP MAIL Service ready")
    controller.start()

    handler = type("Handler", (_GraphHandler,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="replay-graph", daemon=True)
    thread.start()
    try:
        yield ReplayServers(script, smtp_port, f"https://127.0.0.1:{httpd.server_address[1]}", bundle)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        controller.stop()
