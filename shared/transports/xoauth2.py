"""The SASL XOAUTH2 initial response, in one place (Microsoft's "Authenticate an IMAP, POP or SMTP
connection using OAuth": ``base64("user=" + upn + "^Aauth=Bearer " + token + "^A^A")``).

Pure. The SMTP transport's session code builds ``AUTH XOAUTH2`` from it (smtplib adds the base64), and
``outbox doctor`` runs that same session code in its probe mode.
"""

from __future__ import annotations


def initial_response(user: str, token: str) -> str:
    """The XOAUTH2 string before base64: ``user={user}^Aauth=Bearer {token}^A^A``."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"
