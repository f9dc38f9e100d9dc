"""The SASL XOAUTH2 initial response, in one place (Microsoft's "Authenticate an IMAP, POP or SMTP
connection using OAuth": ``base64("user=" + upn + "^Aauth=Bearer " + token + "^A^A")``).

Pure: the SMTP transport and doctor both build their ``AUTH XOAUTH2`` from here.
"""

from __future__ import annotations

import base64


def initial_response(user: str, token: str) -> str:
    """The XOAUTH2 string before base64 (what ``smtplib.SMTP.auth`` encodes itself)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def encoded(user: str, token: str) -> str:
    """base64 of :func:`initial_response`, as it follows ``AUTH XOAUTH2`` on the wire."""
    return base64.b64encode(initial_response(user, token).encode()).decode("ascii")
