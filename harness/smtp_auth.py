"""Exchange Online's decision on an ``AUTH XOAUTH2`` login, kept apart from the SMTP protocol code.

Exchange answers the same ``535 5.7.3 Authentication unsuccessful [host]`` for every cause once the
string itself parses (wrong audience, expired, no ``SMTP.SendAsApp`` role, no Exchange service
principal or a wrong object id, no FullAccess, unknown mailbox). ``decide`` therefore returns only the
catalog entry to answer; the cause stays inside (the design's "What doctor can know").

Delegated (user) tokens: ``scp`` must hold ``SMTP.Send`` and ``user=`` must be the token's ``upn`` (any
case), or a mailbox the user has FullAccess on. That second rule is unverified: Microsoft's IMAP/POP/SMTP
OAuth page puts a shared mailbox in ``user=``, users report it failing (delegated-auth-notes §6).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from harness.runtime import HarnessRuntime
from harness.tokens import Claims, TokenRejected

SMTP_ROLE = "SMTP.SendAsApp"
SMTP_SCOPE = "SMTP.Send"
TOKEN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class XOAuth2:
    user: str
    token: str


class BadUser(ValueError):
    """``user=`` missing or not an address (501 5.5.124)."""


class Unparsable(ValueError):
    """Not base64, or no ``auth=Bearer`` part (535 5.7.3 like any other failure)."""


def parse_xoauth2(blob: str | bytes) -> XOAuth2:
    """Decode ``base64("user=" + upn + "\\x01auth=Bearer " + token + "\\x01\\x01")``."""
    try:
        raw = base64.b64decode(blob, validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unparsable("not base64 of UTF-8") from None
    fields: dict[str, str] = {}
    for part in text.split("\x01"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), value)
    user = fields.get("user", "").strip()
    local, at, domain = user.rpartition("@")
    if not (at and local and domain) or any(ch.isspace() for ch in user):
        raise BadUser(user)
    scheme, _, token = fields.get("auth", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unparsable("no bearer token")
    return XOAuth2(user=user, token=token.strip())


@dataclass(frozen=True)
class Identity:
    """Who an authenticated SMTP session is: the ``user=`` mailbox and the token's app."""

    mailbox: str
    app_id: str
    user: str | None = None
    """The signed-in user's UPN for a delegated token (None: app-only)."""

    @property
    def delegated(self) -> bool:
        return self.user is not None


class ExchangeAuthenticator:
    """Validates XOAUTH2 tokens like Exchange, with verified tokens cached per token string.

    Signature checks are the expensive part (RSA); a token verified once is trusted until its ``exp``,
    which is what a resource server may do. The scenario-dependent checks run on every login.
    """

    def __init__(self, runtime: HarnessRuntime) -> None:
        self.runtime = runtime
        self._verified: dict[tuple[str, str], Claims] = {}

    def forget(self) -> None:
        self._verified = {}

    def _claims(self, token: str) -> Claims | None:
        key = (token, self.runtime.scenario.tenant_id)
        claims = self._verified.get(key)
        if claims is not None:
            if time.time() < claims.expires_at:
                return claims
            self._verified.pop(key, None)
            return None
        try:
            claims = self.runtime.verify(token, "exchange")
        except TokenRejected:
            return None
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified = {}
        self._verified[key] = claims
        return claims

    def decide(self, login: XOAuth2) -> tuple[str | None, Identity | None]:
        """(catalog entry to answer, None) on failure, (None, identity) on success."""
        claims = self._claims(login.token)
        if claims is None:
            return "smtp.auth_failed", None
        scenario = self.runtime.scenario
        disabled = scenario.smtp_auth_disabled(login.user)
        if disabled == "mailbox":
            return "smtp.auth_disabled_mailbox", None
        if disabled == "tenant":
            return "smtp.auth_disabled_tenant", None
        if not claims.is_app_only:
            return self._decide_delegated(login, claims)
        if not claims.has_role(SMTP_ROLE):
            return "smtp.auth_failed", None
        if not scenario.smtp_may_authenticate(claims.app_id, claims.object_id, login.user):
            return "smtp.auth_failed", None
        mailbox = scenario.mailbox(login.user)
        assert mailbox is not None  # smtp_may_authenticate checked it
        return None, Identity(mailbox=mailbox.address, app_id=claims.app_id)

    def _decide_delegated(self, login: XOAuth2, claims: Claims) -> tuple[str | None, Identity | None]:
        scenario = self.runtime.scenario
        upn = claims.upn
        if not claims.has_scope(SMTP_SCOPE) or not upn:
            return "smtp.auth_failed", None
        mailbox = scenario.mailbox(login.user)
        if mailbox is None or not scenario.has_full_access(upn, mailbox.address):
            return "smtp.auth_failed", None
        return None, Identity(mailbox=mailbox.address, app_id=claims.app_id, user=upn)
